"""Where the texts come from: each source reads its raw splits, `TextDataModule` (data.py)
does the rest. One class per kind of source, each a config in conf/data/:

- `IMDBDataModule` (data=imdb, the default): IMDB from the Hub, or a local copy (parquet in
  the Hub's schema, the Stanford `aclImdb/` folder, or its `.tar.gz`);
- `HubDataModule` (data=hub): any Hugging Face data set by name;
- `FilesDataModule` (data=files): CSV, TSV, JSON Lines or parquet files;
- `FolderDataModule` (data=folder): a folder per class of `.txt` files.
"""

from __future__ import annotations

import json
import os
import socket
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gru_lightning.data import (
    DataError,
    DatasetUnavailableError,
    TextDataModule,
    _by_value,
    _check_size,
    _found,
)

IMDB_SPLITS = ("train", "test")
IMDB_LABELS = ("neg", "pos")
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json",
                ".parquet": "parquet"}


def _import_datasets() -> Any:
    import datasets  # deferred: a cached run never needs it, and it is slow to import

    return datasets


def _file_signature(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def _local_copy_hint() -> str:
    return (
        "Point the run at a local copy with data.local_path=..., e.g.\n"
        "  python train.py data.local_path=/path/to/imdb\n"
        "where the path is a folder of train/test parquet files in the Hub's schema, "
        "an aclImdb/ folder, or aclImdb_v1.tar.gz from https://ai.stanford.edu/~amaas/data/sentiment/."
    )


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connect to the Hub, so an offline machine fails in seconds instead of after
    `datasets`' ~25 s of retries."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}


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



def load_from_hub(name: str, config_name: str | None, hint: str) -> Any:
    """`datasets.load_dataset(name, config_name)`, failing in seconds with `hint` when the Hub
    is unreachable and the data set is not cached."""
    datasets = _import_datasets()
    if not _hub_offline() and not _hub_reachable():
        raise DatasetUnavailableError(
            f"Cannot load {name!r}: the Hugging Face Hub is unreachable from this machine.\n"
            f"{hint}\nIf the data set is already in your Hugging Face cache, set "
            "HF_HUB_OFFLINE=1.")
    try:
        return datasets.load_dataset(name, config_name)
    except Exception as error:  # the Hub raises many types; the message is what matters
        raise DatasetUnavailableError(
            f"Could not load {name!r} from the Hugging Face Hub: {error}\n{hint}") from error


def _sized(name: str, value: int | float | None) -> int | float | None:
    if value is not None:
        _check_size(name, value, zero_ok=False)
    return value


class IMDBDataModule(TextDataModule):
    """IMDB reviews (0 negative, 1 positive), with the notebook's preprocessing by default.

    Args:
        hub_name: data set on the Hugging Face Hub, used when `local_path` is None.
        local_path: a local copy: a folder of train/test parquet files in the Hub's schema,
            an `aclImdb/` folder (or its parent), or `aclImdb_v1.tar.gz`.
        **settings: the tokenization, hold-out and batching settings of `TextDataModule`.
    """

    label_names = IMDB_LABELS
    cache_name = "imdb"

    def __init__(self, hub_name: str = "stanfordnlp/imdb", local_path: str | None = None,
                 **settings: Any) -> None:
        super().__init__(**settings)
        self.hub_name = hub_name
        self.local_path = Path(local_path).expanduser() if local_path else None

    def source_name(self) -> str:
        return (f"data.local_path={str(self.local_path)!r}" if self.local_path is not None
                else f"data.hub_name={self.hub_name!r}")

    def check_labels(self, labels: dict[str, list[Any]],
                     class_names: list[str] | None) -> tuple[dict[str, list[int]], list[str]]:
        # IMDB is binary: a third value is a damaged copy, not a third class.
        for split, values in labels.items():
            if bad := _by_value(values, lambda v: v in (0, 1) and not isinstance(v, bool)):
                raise DataError(
                    f"{self.source_name()}, {split} split: labels must be 0 (negative) or 1 "
                    f"(positive), found {_found(bad)} (rows counted from 0). Fix or drop "
                    "those rows.")
        if len(set(labels["train"])) < 2:
            raise DataError(f"{self.source_name()}, train split: every label is "
                            f"{labels['train'][0]!r}; a classifier needs both classes")
        return {split: list(values) for split, values in labels.items()}, list(IMDB_LABELS)

    def source_signature(self) -> dict[str, Any]:
        if self.local_path is None:
            return {"hub": self.hub_name}
        path = self._checked_local_path()
        if _is_tarball(path):
            stat = path.stat()
            return {"tarball": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
        if (root := _acl_root(path)) is not None:
            dirs = [root / s / c for s in IMDB_SPLITS for c in IMDB_LABELS]
            return {"acl": str(root.resolve()), "mtimes": [d.stat().st_mtime_ns for d in dirs]}
        return {"parquet": {split: _file_signature([Path(f) for f in names])
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
        datasets = _import_datasets()
        path = self._checked_local_path()
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=IMDB_LABELS)}
        )
        try:
            acl_source = path if _is_tarball(path) else _acl_root(path)
            if acl_source is not None:
                signature = json.dumps(self.source_signature())
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


class HubDataModule(TextDataModule):
    """Any text classification data set on the Hugging Face Hub, e.g. ag_news,
    yelp_polarity, or glue/sst2 (name=glue config_name=sst2 text_columns=[sentence]).

    Args:
        name: the data set's name on the Hub.
        config_name: its configuration, where it has several.
        train_split, test_split: split names; test_split=None holds out `test_size`.
        text_columns: one or several text columns, joined by a space.
        label_column: the label column: a ClassLabel (its names are used), ints or strings.
        label_names: names for the classes, in the order of their sorted label values.
        test_size: texts held out for testing (a count or a share) where there is no test
            split.
        **settings: the tokenization, hold-out and batching settings of `TextDataModule`.
    """

    def __init__(self, name: str = "ag_news", config_name: str | None = None,
                 train_split: str = "train", test_split: str | None = "test",
                 text_columns: Sequence[str] = ("text",), label_column: str = "label",
                 label_names: Sequence[str] | None = None, test_size: int | float | None = None,
                 **settings: Any) -> None:
        super().__init__(**settings)
        self.name, self.config_name = name, config_name
        self.train_split, self.test_split = train_split, test_split
        self.text_columns, self.label_column = list(text_columns), label_column
        self.label_names = list(label_names) if label_names else None
        self.test_size = _sized("data.test_size", test_size)

    def source_name(self) -> str:
        return f"data.name={self.name!r}" + (f" ({self.config_name})" if self.config_name else "")

    def source_signature(self) -> dict[str, Any]:
        return {"hub": self.name, "config": self.config_name, "train": self.train_split,
                "test": self.test_split}

    def read(self) -> dict[str, Any]:
        hint = "Train on a local copy instead: data=files data.train_file=... (see README)."
        splits = load_from_hub(self.name, self.config_name, hint)
        wanted = {"train": self.train_split}
        if self.test_split is not None:
            wanted["test"] = self.test_split
        for role, split in wanted.items():
            if split not in splits:
                raise DataError(f"{self.source_name()} has no split {split!r} (data."
                                f"{role}_split); its splits: {sorted(splits)}")
        return {role: splits[split] for role, split in wanted.items()}


class FilesDataModule(TextDataModule):
    """Texts and labels from local files: CSV, TSV, JSON Lines or parquet, one file per
    split, or a single file with a seeded test hold-out (`test_size`).

    Args:
        train_file: the training file (the format from its extension, or `file_format`).
        test_file: the test file; None holds out `test_size` of the training file.
        file_format: csv, tsv, json (JSON Lines) or parquet; None: from the extension.
        text_columns: one or several text columns, joined by a space (e.g. [title,
            description]).
        label_column: the label column: ints or strings.
        label_names: names for the classes, in the order of their sorted label values (e.g.
            AG News' 1-4: [World, Sports, Business, Sci/Tech]).
        test_size: texts held out for testing (a count or a share) when there is no test_file.
        **settings: the tokenization, hold-out and batching settings of `TextDataModule`.
    """

    def __init__(self, train_file: str | None = None, test_file: str | None = None,
                 file_format: str | None = None, text_columns: Sequence[str] = ("text",),
                 label_column: str = "label", label_names: Sequence[str] | None = None,
                 test_size: int | float | None = 0.2, **settings: Any) -> None:
        super().__init__(**settings)
        if file_format is not None and file_format not in FILE_FORMATS.values():
            raise ValueError(f"data.file_format must be one of {sorted(set(FILE_FORMATS.values()))}"
                             f" or null, got {file_format!r}")
        self.files = {"train": train_file, "test": test_file}
        self.file_format = file_format
        self.text_columns, self.label_column = list(text_columns), label_column
        self.label_names = list(label_names) if label_names else None
        self.test_size = None if test_file else _sized("data.test_size", test_size)

    def _paths(self) -> dict[str, Path]:
        if not self.files["train"]:
            raise DatasetUnavailableError("data=files needs data.train_file=PATH (a .csv, .tsv, "
                                          ".jsonl or .parquet file)")
        paths = {}
        for split, name in self.files.items():
            if name is None:
                continue
            path = Path(name).expanduser()
            if not path.is_file():
                raise DatasetUnavailableError(f"data.{split}_file={name!r} does not exist")
            paths[split] = path
        return paths

    def _format(self, path: Path) -> str:
        found = self.file_format or FILE_FORMATS.get(path.suffix.lower())
        if found is None:
            raise DatasetUnavailableError(
                f"{str(path)!r}: cannot tell the format from its extension; set "
                f"data.file_format to one of {sorted(set(FILE_FORMATS.values()))}")
        return found

    def source_name(self) -> str:
        return f"data.train_file={self.files['train']!r}"

    def source_signature(self) -> dict[str, Any]:
        paths = self._paths()
        return {"files": {split: _file_signature([p]) for split, p in paths.items()},
                "format": self.file_format}

    def read(self) -> dict[str, Any]:
        datasets = _import_datasets()
        paths = self._paths()
        formats = {self._format(p) for p in paths.values()}
        if len(formats) > 1:
            raise DatasetUnavailableError(f"the train and test files differ in format: {formats}")
        found = formats.pop()
        options = {"delimiter": "\t"} if found == "tsv" else {}
        splits = {}
        for split, path in paths.items():  # one at a time: their columns may differ
            try:
                splits[split] = datasets.load_dataset(
                    "csv" if found == "tsv" else found, data_files={split: str(path)},
                    split=split, **options)
            except Exception as error:
                raise DatasetUnavailableError(
                    f"Could not read {str(path)!r} as {found}: {type(error).__name__}: "
                    f"{str(error).splitlines()[0] if str(error) else ''}") from error
        return splits


class FolderDataModule(TextDataModule):
    """A folder per class of `.txt` files, one text each, as Keras'
    `text_dataset_from_directory` reads them: `train_dir/<class>/*.txt`. The folder names
    are the class names (sorted).

    Args:
        train_dir: the training folder.
        test_dir: a test folder of the same layout; None holds out `test_size`.
        test_size: texts held out for testing (a count or a share) when there is no test_dir.
        **settings: the tokenization, hold-out and batching settings of `TextDataModule`.
    """

    def __init__(self, train_dir: str | None = None, test_dir: str | None = None,
                 test_size: int | float | None = 0.2, **settings: Any) -> None:
        super().__init__(**settings)
        self.dirs = {"train": train_dir, "test": test_dir}
        self.test_size = None if test_dir else _sized("data.test_size", test_size)

    def _classes(self, split: str) -> dict[str, list[Path]]:
        name = self.dirs[split]
        if not name:
            raise DatasetUnavailableError("data=folder needs data.train_dir=PATH")
        root = Path(name).expanduser()
        if not root.is_dir():
            raise DatasetUnavailableError(f"data.{split}_dir={name!r} is not a folder")
        classes = {d.name: sorted(d.glob("*.txt")) for d in sorted(root.iterdir()) if d.is_dir()}
        classes = {name: files for name, files in classes.items() if files}
        if not classes:
            raise DatasetUnavailableError(
                f"data.{split}_dir={name!r} holds no class folders of .txt files "
                "(expected <dir>/<class>/*.txt)")
        return classes

    def source_name(self) -> str:
        return f"data.train_dir={self.dirs['train']!r}"

    def source_signature(self) -> dict[str, Any]:
        return {split: {name: _file_signature(files)
                        for name, files in self._classes(split).items()}
                for split, folder in self.dirs.items() if folder}

    def read(self) -> dict[str, Any]:
        datasets = _import_datasets()
        train = self._classes("train")
        names = list(train)
        splits = {}
        for split, folder in self.dirs.items():
            if not folder:
                continue
            classes = train if split == "train" else self._classes(split)
            if unknown := sorted(set(classes) - set(names)):
                raise DataError(f"data.test_dir={folder!r}: class folder(s) {unknown} are not "
                                f"in data.train_dir (its classes: {names})")
            texts, labels = [], []
            for name, files in classes.items():
                for file in files:
                    texts.append(file.read_text(encoding="utf-8", errors="replace"))
                    labels.append(names.index(name))
            features = datasets.Features({"text": datasets.Value("string"),
                                          "label": datasets.ClassLabel(names=names)})
            splits[split] = datasets.Dataset.from_dict({"text": texts, "label": labels},
                                                       features=features)
        return splits
