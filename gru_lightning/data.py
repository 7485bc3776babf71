"""IMDB as a LightningDataModule: load (Hub or local copy), tokenize, pad, cache, batch."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import tokenizers
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from gru_lightning.preprocessing import FORMAT_VERSION, Side, TextEncoder, check_side

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


class DatasetUnavailableError(RuntimeError):
    """IMDB could not be loaded from the configured source."""


class DataError(ValueError):
    """The data loaded, but its content cannot be trained on as it is (labels, texts)."""


LABELS = (0, 1)  # negative, positive
SHOWN_ROWS = 5  # rows named in a message


def _rows(rows: list[int]) -> str:
    shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def checked_split(split: str, texts: list[Any], labels: list[Any],
                  source: str) -> tuple[list[str], list[int]]:
    """The reviews of one split that can be trained on, checked before any tokenization.

    Labels must be 0 or 1: anything else (a null, a 2, a string) is an error naming the
    split, the value and its rows, since guessing what it means would train a wrong model.
    Reviews with no text (null, empty or only whitespace) carry no evidence for their label:
    they are left out with a warning naming their rows. `source` names the data in messages.
    """
    bad: dict[Any, list[int]] = {}
    for row, label in enumerate(labels):
        if label not in LABELS or isinstance(label, bool):
            bad.setdefault(label, []).append(row)
    if bad:
        found = "; ".join(f"{value!r} in row(s) {_rows(rows)}" for value, rows in bad.items())
        raise DataError(
            f"{source}, {split} split: labels must be 0 (negative) or 1 (positive), found "
            f"{found} (rows counted from 0). Fix or drop those rows.")
    empty = [row for row, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if len(empty) == len(texts):
        raise DataError(f"{source}, {split} split: no review has any text")
    if empty:
        log.warning("%s, %s split: %d review(s) with no text (null or blank) left out: row(s) "
                    "%s", source, split, len(empty), _rows(empty))
        keep = sorted(set(range(len(texts))) - set(empty))
        return [texts[i] for i in keep], [labels[i] for i in keep]
    return list(texts), list(labels)


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
    files = {split: sorted(str(p) for p in path.rglob(f"{split}*.parquet")) for split in SPLITS}
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


class TensorBatchDataset(Dataset):
    """In-memory (ids, label) pairs that the DataLoader indexes one whole batch at a time
    (`__getitems__`): a batch is one tensor gather, with no per-example Python."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.ids[index], self.labels[index]


def _batch_as_is(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return batch


class IMDBDataModule(L.LightningDataModule):
    """IMDB reviews as padded id tensors, with the notebook's preprocessing by default.

    Args:
        hub_name: dataset on the Hugging Face Hub, used when `local_path` is None.
        local_path: a local copy: a folder of train/test parquet files in the Hub's schema,
            an `aclImdb/` folder (or its parent), or `aclImdb_v1.tar.gz`.
        max_features: vocabulary size, padding and unknown ids included.
        maxlen: tokens per review after padding/truncation.
        padding, truncating: "pre" (Keras' default: keep the last `maxlen` tokens, pad in
            front) or "post".
        punctuation: also keep "!" and "?" as words (the notebook's word index drops them).
        val_size: training reviews held out for validation (an int), or a fraction in
            (0, 1); 0 validates on the test split, as the Keras notebook did.
        split_seed: seed of the validation hold-out, fixed apart from the run's seed so that
            runs with different seeds share one validation set (and one cache entry).
        batch_size: training batch size; eval_batch_size: for validation and test.
        cache_dir: where tokenized splits are cached, keyed by everything that changes them.
        tensors_on_device: on an accelerator, move the splits to it once in `setup`, so each
            batch is gathered on the device with no host-to-device copy (IMDB at maxlen 100
            is ~20 MB). No effect on the CPU.
    """

    def __init__(
        self,
        hub_name: str = "stanfordnlp/imdb",
        local_path: str | None = None,
        max_features: int = 10000,
        maxlen: int = 100,
        padding: Side = "pre",
        truncating: Side = "pre",
        punctuation: bool = False,
        val_size: int | float = 1000,
        split_seed: int = 42,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        cache_dir: str = ".cache",
        tensors_on_device: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("maxlen", maxlen), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        if isinstance(max_features, bool) or not isinstance(max_features, int) or max_features < 3:
            raise ValueError(f"data.max_features must be an integer >= 3, got {max_features!r}")
        check_side("data.padding", padding)
        check_side("data.truncating", truncating)
        if isinstance(val_size, bool) or not (
            (isinstance(val_size, int) and val_size >= 0)
            or (isinstance(val_size, float) and 0 < val_size < 1)
        ):
            raise ValueError(
                f"data.val_size must be a count >= 0 or a fraction in (0, 1), got {val_size!r}"
            )
        self.save_hyperparameters(ignore=["cache_dir"])
        self.hub_name = hub_name
        self.local_path = Path(local_path).expanduser() if local_path else None
        self.max_features = max_features
        self.maxlen = maxlen
        self.padding = padding
        self.truncating = truncating
        self.punctuation = punctuation
        self.val_size = val_size
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.cache_dir = Path(cache_dir).expanduser()
        self.tensors_on_device = tensors_on_device
        self.text_encoder: TextEncoder | None = None
        self.splits: dict[str, TensorBatchDataset] = {}
        self.cache_hit: bool | None = None  # set by prepare_data: was tokenization skipped?

    # ---- where the data comes from --------------------------------------------------------

    def _source_signature(self) -> dict[str, Any]:
        """What identifies the raw data, cheaply (no reading): for local copies the files'
        sizes and modification times, for the Hub the dataset name."""
        if self.local_path is None:
            return {"hub": self.hub_name}
        path = self._checked_local_path()
        if _is_tarball(path):
            stat = path.stat()
            return {"tarball": str(path.resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns}
        if (root := _acl_root(path)) is not None:
            dirs = [root / s / c for s in SPLITS for c in ("neg", "pos")]
            return {"acl": str(root.resolve()), "mtimes": [d.stat().st_mtime_ns for d in dirs]}
        files = _parquet_files(path)
        return {
            "parquet": {
                split: [(str(Path(f).resolve()), os.stat(f).st_size, os.stat(f).st_mtime_ns)
                        for f in names]
                for split, names in files.items()
            }
        }

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

    def load_raw(self) -> Any:
        """The raw train/test splits as a `datasets.DatasetDict` with `text` and `label`."""
        import datasets  # deferred: a cached run never needs it, and it is slow to import

        if self.local_path is None:
            if not _hub_offline() and not _hub_reachable():
                raise DatasetUnavailableError(
                    f"Cannot load {self.hub_name!r}: the Hugging Face Hub is unreachable from "
                    f"this machine and no local copy is configured.\n{_local_copy_hint()}\n"
                    "If the dataset is already in your Hugging Face cache, set HF_HUB_OFFLINE=1."
                )
            try:
                return datasets.load_dataset(self.hub_name)
            except Exception as error:  # the Hub raises many types; the message is what matters
                raise DatasetUnavailableError(
                    f"Could not load {self.hub_name!r} from the Hugging Face Hub: {error}\n"
                    f"{_local_copy_hint()}"
                ) from error

        path = self._checked_local_path()
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        )
        try:
            acl_source = path if _is_tarball(path) else _acl_root(path)
            if acl_source is not None:
                signature = json.dumps(self._source_signature())
                return datasets.DatasetDict({
                    split: datasets.Dataset.from_generator(
                        _acl_reviews, features=features,
                        gen_kwargs={"source": str(acl_source), "split": split,
                                    "signature": signature},
                    )
                    for split in SPLITS
                })
            return datasets.load_dataset("parquet", data_files=_parquet_files(path))
        except Exception as error:
            raise DatasetUnavailableError(
                f"Could not read the IMDB copy at {str(path)!r}: {type(error).__name__}: {error}"
            ) from error

    # ---- tokenized cache ------------------------------------------------------------------

    def cache_path(self) -> Path:
        key = {
            "source": self._source_signature(),
            "max_features": self.max_features,
            "maxlen": self.maxlen,
            "padding": self.padding,
            "truncating": self.truncating,
            "punctuation": self.punctuation,
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "format": FORMAT_VERSION,
            "tokenizers": tokenizers.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"imdb-{digest}.pt"

    def _tokenize(self) -> dict[str, Any]:
        start = time.perf_counter()
        raw = self.load_raw()
        source = (f"data.local_path={str(self.local_path)!r}" if self.local_path is not None
                  else f"data.hub_name={self.hub_name!r}")
        checked = {}
        for split in SPLITS:
            missing = {"text", "label"} - set(raw[split].column_names)
            if missing:
                raise DataError(
                    f"{source}, {split} split: no column(s) {sorted(missing)} (columns: "
                    f"{raw[split].column_names}); IMDB's schema is text (string), label (0/1)")
            checked[split] = checked_split(split, raw[split]["text"], raw[split]["label"],
                                           source)
        train_texts, train_labels = checked["train"]
        n_train = len(train_labels)
        n_val = self.val_size
        if isinstance(n_val, float):
            n_val = round(n_val * n_train)
        if n_val >= n_train:
            raise ValueError(f"data.val_size={self.val_size} leaves no training reviews "
                             f"(the train split has {n_train})")
        # The Hub's train split is sorted by label: hold out a seeded random subset.
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(self.split_seed))
        val_rows, fit_rows = order[:n_val].tolist(), order[n_val:].tolist()
        fit_texts = [train_texts[i] for i in fit_rows]
        # The vocabulary sees only the reviews the model trains on.
        encoder = TextEncoder.fit(fit_texts, self.max_features, self.maxlen, self.padding,
                                  self.truncating, self.punctuation)

        def encode(texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
            # int32 halves memory at long maxlen; nn.Embedding takes it as is.
            return {"ids": encoder.encode(texts).to(torch.int32),
                    "labels": torch.tensor(labels, dtype=torch.float32)}

        train_labels_t = torch.tensor(train_labels)
        splits = {
            "train": encode(fit_texts, train_labels_t[fit_rows].tolist()),
            "test": encode(*checked["test"]),
        }
        if n_val:
            splits["val"] = encode([train_texts[i] for i in val_rows],
                                   train_labels_t[val_rows].tolist())
        log.info("Tokenized IMDB (%s train, %s val, %s test reviews) in %.1f s",
                 len(fit_rows), n_val, len(splits["test"]["labels"]),
                 time.perf_counter() - start)
        return {"splits": splits, "text_encoder": encoder.to_dict()}

    def prepare_data(self) -> None:
        path = self.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parallel sweep jobs wait for the one that tokenizes, then all read its cache.
        with FileLock(str(path) + ".lock"):
            self.cache_hit = path.exists()
            if self.cache_hit:
                log.info("Tokenized IMDB found in cache %s: skipping tokenization", path)
                return
            data = self._tokenize()
            # Write then rename: a crash never leaves a half-written cache file behind.
            partial = path.with_suffix(f".{os.getpid()}.partial")
            torch.save(data, partial)
            os.replace(partial, path)
        log.info("Cached tokenized IMDB to %s", path)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.cache_path()
        if not path.exists():  # setup without prepare_data, e.g. called by hand
            self.prepare_data()
        try:
            data = torch.load(path, weights_only=True)
            if "train" not in data.get("splits", {}) or "text_encoder" not in data:
                raise ValueError("splits or text encoder missing")
        except Exception as error:  # derived data: any damage is healed by rebuilding it
            log.warning("The tokenized cache %s is unreadable (%s: %s); it is derived data, so "
                        "it is deleted and rebuilt", path, type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
            with FileLock(str(path) + ".lock"):
                path.unlink(missing_ok=True)
            self.prepare_data()
            data = torch.load(path, weights_only=True)
        self.text_encoder = TextEncoder.from_dict(data["text_encoder"])
        self.splits = {name: TensorBatchDataset(s["ids"], s["labels"])
                       for name, s in data["splits"].items()}
        # val_size=0: validate on the test split, as the Keras notebook did.
        self.splits.setdefault("val", self.splits["test"])
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.tensors_on_device and device is not None and device.type != "cpu":
            for split in self.splits.values():
                split.ids, split.labels = split.ids.to(device), split.labels.to(device)

    # ---- batches --------------------------------------------------------------------------

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(self.splits[split], batch_size=batch_size, shuffle=shuffle,
                          collate_fn=_batch_as_is)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
