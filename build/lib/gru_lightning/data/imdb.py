"""IMDB's 50,000 movie reviews (`data=imdb`, the default): from the Hugging Face Hub, or a
local copy: parquet in the Hub's schema, the Stanford `aclImdb/` folder, or its `.tar.gz`."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gru_lightning.data.base import (
    DataError,
    DatasetUnavailableError,
    TextSource,
    file_signature,
    import_datasets,
)
from gru_lightning.data.checks import describe, rows_by_value
from gru_lightning.data.hub import load_from_hub

IMDB_SPLITS = ("train", "test")
IMDB_LABELS = ("neg", "pos")


def _local_copy_hint() -> str:
    return (
        "Point the run at a local copy with data.local_path=..., e.g.\n"
        "  python train.py data.local_path=/path/to/imdb\n"
        "where the path is a folder of train/test parquet files in the Hub's schema, "
        "an aclImdb/ folder, or aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/."
    )


def _acl_root(path: Path) -> Path | None:
    """The aclImdb folder itself, given it or its parent; None if `path` is not one."""
    for root in (path, path / "aclImdb"):
        if (root / "train" / "pos").is_dir() and (root / "test" / "neg").is_dir():
            return root
    return None


def _is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


def _parquet_files(path: Path) -> dict[str, list[str]]:
    """train/test parquet files under `path`: `train.parquet` or the Hub's
    `plain_text/train-00000-of-00001.parquet` layout."""
    files = {split: sorted(str(p) for p in path.rglob(f"{split}*.parquet"))
             for split in IMDB_SPLITS}
    return files if all(files.values()) else {}


def _acl_reviews(source: str, split: str, signature: str) -> Iterator[dict[str, Any]]:
    """Reviews of one split of the Stanford distribution, from the `aclImdb/` folder or the
    `.tar.gz` itself (streamed, not unpacked). `signature` (file sizes and modification times)
    is unused here: it is an argument so that `datasets`' fingerprint of this generator, and
    so its Arrow cache, changes when the files do."""
    del signature
    path = Path(source)
    if path.is_dir():
        for label, name in enumerate(("neg", "pos")):
            for file in sorted((path / split / name).glob("*.txt")):
                yield {"text": file.read_text(encoding="utf-8"), "label": label}
        return
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")  # aclImdb/<split>/<neg|pos>/<id>_<rating>.txt
            in_split = len(parts) == 4 and parts[1] == split and parts[2] in {"neg", "pos"}
            if member.isfile() and in_split:
                text = archive.extractfile(member).read().decode("utf-8")
                yield {"text": text, "label": int(parts[2] == "pos")}


class IMDBSource(TextSource):
    """IMDB's movie reviews (0 negative, 1 positive): the default data, with the notebook's
    preprocessing (conf/data/_common.yaml).

    Args:
        hub_name: data set on the Hugging Face Hub, used when `local_path` is None.
        local_path: a local copy: a folder of train/test parquet files in the Hub's schema,
            an `aclImdb/` folder (or its parent), or `aclImdb_v1.tar.gz`.
    """

    label_names = IMDB_LABELS
    cache_name = "imdb"

    def __init__(self, hub_name: str = "stanfordnlp/imdb", local_path: str | None = None) -> None:
        self.hub_name = hub_name
        self.local_path = Path(local_path).expanduser() if local_path else None

    def setting(self) -> str:
        return (f"data.local_path={str(self.local_path)!r}" if self.local_path is not None
                else f"data.hub_name={self.hub_name!r}")

    def check_labels(self, labels: dict[str, list[Any]],
                     class_names: list[str] | None) -> tuple[dict[str, list[int]], list[str]]:
        # IMDB is binary: a third value is a damaged copy, not a third class.
        for split, values in labels.items():
            if bad := rows_by_value(values, lambda v: v in (0, 1) and not isinstance(v, bool)):
                raise DataError(
                    f"{self.setting()}, {split} split: labels must be 0 (negative) or 1 "
                    f"(positive), found {describe(bad)} (rows counted from 0). Fix or drop "
                    "those rows.")
        if len(set(labels["train"])) < 2:
            raise DataError(f"{self.setting()}, train split: every label is "
                            f"{labels['train'][0]!r}; a classifier needs both classes")
        return {split: list(values) for split, values in labels.items()}, list(IMDB_LABELS)

    def signature(self) -> dict[str, Any]:
        if self.local_path is None:
            return {"hub": self.hub_name}
        path = self._checked_local_path()
        if _is_tarball(path):
            stat = path.stat()
            return {"tarball": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
        if (root := _acl_root(path)) is not None:
            dirs = [root / s / c for s in IMDB_SPLITS for c in IMDB_LABELS]
            return {"acl": str(root.resolve()), "mtimes": [d.stat().st_mtime_ns for d in dirs]}
        return {"parquet": {split: file_signature([Path(f) for f in names])
                            for split, names in _parquet_files(path).items()}}

    def _checked_local_path(self) -> Path:
        path = self.local_path
        assert path is not None
        if not path.exists():
            raise DatasetUnavailableError(
                f"data.local_path={str(path)!r} does not exist.\n{_local_copy_hint()}"
            )
        if not (_is_tarball(path) or _acl_root(path) or _parquet_files(path)):
            raise DatasetUnavailableError(
                f"data.local_path={str(path)!r} holds no IMDB copy: expected train*.parquet and "
                f"test*.parquet files, an aclImdb/ folder with train/ and test/, or a "
                f"aclImdb_v1.tar.gz file.\n{_local_copy_hint()}"
            )
        return path

    def read(self) -> Any:
        if self.local_path is None:
            splits = load_from_hub(self.hub_name, None, _local_copy_hint())
            # The Hub's copy also has an "unsupervised" split (label -1): not for training.
            return {split: splits[split] for split in IMDB_SPLITS}
        datasets = import_datasets()
        path = self._checked_local_path()
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=IMDB_LABELS)}
        )
        try:
            acl_source = path if _is_tarball(path) else _acl_root(path)
            if acl_source is not None:
                signature = json.dumps(self.signature())
                return datasets.DatasetDict({
                    split: datasets.Dataset.from_generator(
                        _acl_reviews, features=features,
                        gen_kwargs={"source": str(acl_source), "split": split,
                                    "signature": signature},
                    )
                    for split in IMDB_SPLITS
                })
            return datasets.load_dataset("parquet", data_files=_parquet_files(path))
        except Exception as error:
            raise DatasetUnavailableError(
                f"Could not read the IMDB copy at {str(path)!r}: {type(error).__name__}: {error}"
            ) from error
