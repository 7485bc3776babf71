"""Text classification data as a LightningDataModule: check, tokenize, pad, cache, batch.

`TextDataModule` does everything that follows reading the raw data: it checks the labels
and texts, maps labels to ids, holds out the test (when the source has none) and
validation reviews, builds the vocabulary, pads, caches and batches. Each source in
`sources.py` (IMDB, any Hugging Face data set, local files, a folder per class) only reads
its raw splits: `read()`, `source_signature()` and `source_name()`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import tokenizers
import torch
from filelock import FileLock
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from gru_lightning.preprocessing import FORMAT_VERSION, Side, TextEncoder, check_side

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cached content changes (2: label names)
SHOWN_ROWS = 5  # rows named in a message


class DatasetUnavailableError(RuntimeError):
    """The data could not be loaded from the configured source."""


class DataError(ValueError):
    """The data loaded, but its content cannot be trained on as it is (labels, texts)."""


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def _by_value(values: Sequence[Any], wanted) -> dict[Any, list[int]]:
    """Rows of the values for which `wanted(value)` is false, grouped by value."""
    bad: dict[Any, list[int]] = {}
    for row, value in enumerate(values):
        if not wanted(value):
            bad.setdefault(value, []).append(row)
    return bad


def _found(bad: dict[Any, list[int]]) -> str:
    return "; ".join(f"{value!r} in row(s) {_rows(rows)}" for value, rows in bad.items())


def joined_texts(columns: Sequence[Sequence[Any]]) -> list[str | None]:
    """One text per row from one or several text columns, joined by a space (a null cell
    counts as empty); None where the row has no text at all."""
    if len(columns) == 1:  # the common case, without a join per row
        return [c if _has_text(c) else None for c in columns[0]]
    texts = []
    for cells in zip(*columns, strict=True):
        parts = [c for c in cells if _has_text(c)]
        texts.append(" ".join(parts) if parts else None)
    return texts


def _has_text(cell: Any) -> bool:
    # isspace() stops at the first other character; strip() would copy the whole text.
    return isinstance(cell, str) and cell != "" and not cell.isspace()


def kept_rows(split: str, texts: Sequence[str | None], source: str) -> list[int]:
    """Rows that have text. A review with no text (null, empty or only whitespace) carries no
    evidence for its label: it is left out, with a warning naming its rows."""
    empty = [row for row, text in enumerate(texts) if not _has_text(text)]
    if len(empty) == len(texts):
        raise DataError(f"{source}, {split} split: no review has any text")
    if empty:
        log.warning("%s, %s split: %d review(s) with no text (null or blank) left out: row(s) "
                    "%s", source, split, len(empty), _rows(empty))
    skip = set(empty)
    return [row for row in range(len(texts)) if row not in skip]


def label_ids(labels: dict[str, Sequence[Any]], column: str, source: str,
              class_names: Sequence[str] | None = None,
              label_names: Sequence[str] | None = None) -> tuple[dict[str, list[int]], list[str]]:
    """Labels mapped to ids 0..K-1, checked before any tokenization, and the class names.

    `class_names`: the data's own names (a `datasets.ClassLabel`), whose ids the labels
    already are. Otherwise the classes are the distinct training labels (ints or strings) in
    sorted order, named `label_names` when given, else by their values. Null labels, a single
    class and a test label never seen in training are errors naming the column, a value and
    its rows (counted from 0 in that split)."""
    where = f"{source}, column {column!r}"
    for split, values in labels.items():
        if nulls := [row for row, v in enumerate(values) if v is None]:
            raise DataError(f"{where}, {split} split: no label in row(s) {_rows(nulls)}; "
                            "fill them in or drop those rows")
    if class_names is not None:
        k = len(class_names)
        for split, values in labels.items():
            bad = _by_value(values, lambda v, k=k: isinstance(v, int) and 0 <= v < k)
            if bad:
                raise DataError(f"{where}, {split} split: labels must be ids of "
                                f"{list(class_names)} (0 to {k - 1}), found {_found(bad)}")
        classes: list[Any] = list(range(k))
        names = [str(n) for n in class_names]
    else:
        kinds = {type(v) for v in labels["train"]}
        if len(kinds) > 1 or not kinds <= {int, str}:
            raise DataError(f"{where}, train split: labels must be all integers or all strings, "
                            f"found {sorted(t.__name__ for t in kinds)}")
        classes = sorted(set(labels["train"]))
        names = [str(c) for c in classes]
    present = sorted(set(labels["train"]), key=str)
    if len(present) < 2:
        raise DataError(f"{where}, train split: every label is {present[0]!r}; a classifier "
                        "needs at least two classes")
    if label_names is not None:
        if len(label_names) != len(classes):
            raise DataError(f"data.label_names has {len(label_names)} names, but {where} has "
                            f"{len(classes)} classes: {classes}")
        names = [str(n) for n in label_names]
    index = {c: i for i, c in enumerate(classes)}
    ids = {}
    for split, values in labels.items():
        if bad := _by_value(values, lambda v: v in index):
            raise DataError(f"{where}, {split} split: label(s) never seen in training: "
                            f"{_found(bad)} (training has {classes})")
        ids[split] = [index[v] for v in values]
    return ids, names


class TensorBatchDataset(Dataset):
    """In-memory (ids, label) pairs, or (ids, label, n-gram scores) triples once the n-gram
    stage has scored the split (`ngram_scores`, `NGramModel.scores`), that the DataLoader
    indexes one whole batch at a time (`__getitems__`): a batch is one tensor gather, with
    no per-example Python."""

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor,
                 ngram_scores: torch.Tensor | None = None) -> None:
        self.ids, self.labels, self.ngram_scores = ids, labels, ngram_scores

    def tensors(self) -> tuple[torch.Tensor, ...]:
        scores = () if self.ngram_scores is None else (self.ngram_scores,)
        return self.ids, self.labels, *scores

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors())

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index] for t in self.tensors())


def _batch_as_is(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return batch


class SliceBatchSampler(BatchSampler):
    """BatchSampler's batches, in the same order, as slices of one index tensor drawn from
    the sampler once per epoch: not a list of ints built one at a time for every batch
    (~0.1 ms a batch on a 2-core CPU, more than the gather itself). Lightning rebuilds it
    around a DistributedSampler under DDP, as it does a BatchSampler."""

    def __iter__(self) -> Any:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start : start + self.batch_size]



class TextDataModule(L.LightningDataModule):
    """Labeled texts as padded id tensors; a source (sources.py) supplies `read()`.

    Args:
        max_features: vocabulary size, padding and unknown ids included.
        maxlen: tokens per text after padding/truncation.
        padding, truncating: "pre" (Keras' default: keep the last `maxlen` tokens, pad in
            front) or "post".
        punctuation: also keep "!" and "?" as words (the notebook's word index drops them).
        val_size: training texts held out for validation (an int), or a fraction in
            (0, 1); 0 validates on the test split, as the Keras notebook did.
        split_seed: seed of the hold-outs (validation, and test where the source has no test
            split), fixed apart from the run's seed so that runs with different seeds share
            them (and one cache entry).
        batch_size: training batch size; eval_batch_size: for validation and test.
        cache_dir: where tokenized splits are cached, keyed by everything that changes them.
        tensors_on_device: on an accelerator, move the splits to it once in `setup`, so each
            batch is gathered on the device with no host-to-device copy (IMDB at maxlen 100
            is ~20 MB). No effect on the CPU.
    """

    # Set by each source: where the text and label are, and what the classes are called.
    text_columns: Sequence[str] = ("text",)
    label_column: str = "label"
    label_names: Sequence[str] | None = None
    test_size: int | float | None = None  # hold out a test split when the source has none
    cache_name = "data"

    def __init__(
        self,
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
        _check_size("data.val_size", val_size, zero_ok=True)
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
        self.class_names: list[str] = []
        self.splits: dict[str, TensorBatchDataset] = {}
        self.cache_hit: bool | None = None  # set by prepare_data: was tokenization skipped?

    @property
    def num_classes(self) -> int:
        """Classes of the data; known after `setup`."""
        if not self.class_names:
            raise RuntimeError("num_classes is known after setup()")
        return len(self.class_names)

    # ---- the source's part ----------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        """The raw splits as `datasets.Dataset`s: "train", and "test" where the source has
        one. Errors reaching the data raise `DatasetUnavailableError`."""
        raise NotImplementedError

    def source_signature(self) -> dict[str, Any]:
        """What identifies the raw data, cheaply (no reading), for the cache key: e.g. files'
        sizes and modification times, or a Hub name."""
        raise NotImplementedError

    def source_name(self) -> str:
        """The setting that names the data, for messages, e.g. data.train_file='x.csv'."""
        raise NotImplementedError

    def check_labels(self, labels: dict[str, list[Any]],
                     class_names: list[str] | None) -> tuple[dict[str, list[int]], list[str]]:
        """Label ids and class names (`label_ids`); a source may be stricter."""
        return label_ids(labels, self.label_column, self.source_name(), class_names,
                         self.label_names)

    # ---- tokenized cache ------------------------------------------------------------------

    def cache_path(self) -> Path:
        key = {
            "source": self.source_signature(),
            "text_columns": list(self.text_columns),
            "label_column": self.label_column,
            "label_names": list(self.label_names) if self.label_names else None,
            "test_size": self.test_size,
            "max_features": self.max_features,
            "maxlen": self.maxlen,
            "padding": self.padding,
            "truncating": self.truncating,
            "punctuation": self.punctuation,
            "val_size": self.val_size,
            "split_seed": self.split_seed,
            "format": FORMAT_VERSION,
            "cache": CACHE_VERSION,
            "tokenizers": tokenizers.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.cache_name}-{digest}.pt"

    def _split_columns(self, split: str, dataset: Any) -> tuple[list[str | None], list[Any]]:
        columns = dataset.column_names
        missing = [c for c in (*self.text_columns, self.label_column) if c not in columns]
        if missing:
            raise DataError(
                f"{self.source_name()}, {split} split: no column(s) {missing} (columns: "
                f"{columns}); set data.text_columns and data.label_column")
        # [:] reads a datasets Column in batches; iterating it decodes row by row (~10x slower).
        texts = joined_texts([dataset[c][:] for c in self.text_columns])
        return texts, list(dataset[self.label_column][:])

    def _tokenize(self) -> dict[str, Any]:
        start = time.perf_counter()
        raw = self.read()
        source = self.source_name()
        columns = {split: self._split_columns(split, data) for split, data in raw.items()}
        feature = raw["train"].features.get(self.label_column)
        names = getattr(feature, "names", None)  # a datasets.ClassLabel's
        ids, class_names = self.check_labels({s: c[1] for s, c in columns.items()}, names)
        rows = {split: kept_rows(split, columns[split][0], source) for split in columns}
        texts = {split: [columns[split][0][i] for i in rows[split]] for split in columns}
        labels = {split: [ids[split][i] for i in rows[split]] for split in columns}

        train_texts, train_labels = texts["train"], labels["train"]
        generator = torch.Generator().manual_seed(self.split_seed)
        if "test" not in raw:
            # No test split of its own: hold out a seeded share of the training texts.
            n_test = _count(self.test_size or 0, len(train_labels))
            if not 0 < n_test < len(train_labels):
                raise DataError(f"{source} has no test split: set data.test_size to the share "
                                "(e.g. 0.2) or number of texts to hold out for testing")
            order = torch.randperm(len(train_labels), generator=generator).tolist()
            test_rows, rest = order[:n_test], sorted(order[n_test:])
            texts["test"] = [train_texts[i] for i in test_rows]
            labels["test"] = [train_labels[i] for i in test_rows]
            train_texts = [train_texts[i] for i in rest]
            train_labels = [train_labels[i] for i in rest]
        n_train = len(train_labels)
        n_val = _count(self.val_size, n_train)
        if n_val >= n_train:
            raise ValueError(f"data.val_size={self.val_size} leaves no training texts "
                             f"(the train split has {n_train})")
        # A split may be sorted by label (IMDB's is): hold out a seeded random subset.
        order = torch.randperm(n_train, generator=generator)
        val_rows, fit_rows = order[:n_val].tolist(), order[n_val:].tolist()
        fit_texts = [train_texts[i] for i in fit_rows]
        # The vocabulary sees only the texts the model trains on.
        encoder = TextEncoder.fit(fit_texts, self.max_features, self.maxlen, self.padding,
                                  self.truncating, self.punctuation)
        # Two classes: one logit and BCE, float targets; more: class ids for cross-entropy.
        label_dtype = torch.float32 if len(class_names) == 2 else torch.int64

        def encode(texts: list[str], labels: list[int]) -> dict[str, torch.Tensor]:
            # int32 halves memory at long maxlen; nn.Embedding takes it as is.
            return {"ids": encoder.encode(texts).to(torch.int32),
                    "labels": torch.tensor(labels, dtype=label_dtype)}

        splits = {
            "train": encode(fit_texts, [train_labels[i] for i in fit_rows]),
            "test": encode(texts["test"], labels["test"]),
        }
        if n_val:
            splits["val"] = encode([train_texts[i] for i in val_rows],
                                   [train_labels[i] for i in val_rows])
        log.info("Tokenized %s (%s train, %s val, %s test texts, %d classes: %s) in %.1f s",
                 source, len(fit_rows), n_val, len(splits["test"]["labels"]), len(class_names),
                 ", ".join(class_names), time.perf_counter() - start)
        split_texts = {"train": fit_texts, "test": texts["test"]}
        if n_val:
            split_texts["val"] = [train_texts[i] for i in val_rows]
        return {"splits": splits, "text_encoder": encoder.to_dict(),
                "class_names": class_names, "texts": split_texts}

    def prepare_data(self) -> None:
        if self.splits:  # set up in this process already (train.py reads the classes early)
            return
        path = self.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Parallel sweep jobs wait for the one that tokenizes, then all read its cache.
        with FileLock(str(path) + ".lock"):
            self.cache_hit = path.exists()
            if self.cache_hit:
                log.info("Tokenized data found in cache %s: skipping tokenization", path)
                return
            self._write_cache(path)

    def _write_cache(self, path: Path) -> None:
        data = self._tokenize()
        # The texts of each split (after the checks and hold-outs) in a file of their own,
        # read only by the stages that need them (the n-gram model), first: the tensors'
        # file is what says the entry is complete.
        save_atomically({"texts": data.pop("texts")}, self._texts_path(path))
        save_atomically(data, path)
        log.info("Cached the tokenized data to %s", path)

    @staticmethod
    def _texts_path(path: Path) -> Path:
        return path.with_name(path.stem + "-texts.pt")

    def split_texts(self) -> dict[str, list[str]]:
        """The texts of each split, in the order of `splits` (what the tensors encode): the
        cached texts, or, for a cache entry without them, read and tokenized again."""
        path = self.cache_path()
        texts_path = self._texts_path(path)
        try:
            texts = torch.load(texts_path, weights_only=True)["texts"]
        except Exception as error:  # derived data: rebuild it
            log.warning("The cached texts %s are missing or unreadable (%s); the data is read "
                        "and tokenized again", texts_path, type(error).__name__)
            with FileLock(str(path) + ".lock"):
                self._write_cache(path)
            texts = torch.load(texts_path, weights_only=True)["texts"]
        texts.setdefault("val", texts["test"])
        return texts

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._load_splits()
        # train.py sets the data up before the trainer exists (to size the model by the
        # classes), so the move to the device happens on the call that has one.
        device = self.trainer.strategy.root_device if self.trainer is not None else None
        if self.tensors_on_device and device is not None and device.type != "cpu":
            for split in self.splits.values():
                split.ids, split.labels = split.ids.to(device), split.labels.to(device)
                if split.ngram_scores is not None:
                    split.ngram_scores = split.ngram_scores.to(device)

    def _load_splits(self) -> None:
        path = self.cache_path()
        if not path.exists():  # setup without prepare_data, e.g. called by hand
            self.prepare_data()
        try:
            data = torch.load(path, weights_only=True)
            if "train" not in data.get("splits", {}) or "class_names" not in data:
                raise ValueError("splits or class names missing")
        except Exception as error:  # derived data: any damage is healed by rebuilding it
            log.warning("The tokenized cache %s is unreadable (%s: %s); it is derived data, so "
                        "it is deleted and rebuilt", path, type(error).__name__,
                        str(error).splitlines()[0] if str(error) else "")
            with FileLock(str(path) + ".lock"):
                path.unlink(missing_ok=True)
            self.prepare_data()
            data = torch.load(path, weights_only=True)
        self.text_encoder = TextEncoder.from_dict(data["text_encoder"])
        self.class_names = list(data["class_names"])
        self.splits = {name: TensorBatchDataset(s["ids"], s["labels"])
                       for name, s in data["splits"].items()}
        # val_size=0: validate on the test split, as the Keras notebook did.
        self.splits.setdefault("val", self.splits["test"])

    # ---- batches --------------------------------------------------------------------------

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_sampler=SliceBatchSampler(sampler, batch_size, False),
                          collate_fn=_batch_as_is)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)


def save_atomically(data: Any, path: Path) -> None:
    """Write then rename: a crash never leaves a half-written file behind."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(data, partial)
    os.replace(partial, path)


def _check_size(name: str, value: Any, zero_ok: bool) -> None:
    """A count of texts (an int) or a share of them (a float in (0, 1))."""
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value >= (0 if zero_ok else 1))
        or (isinstance(value, float) and 0 < value < 1)
    ):
        raise ValueError(f"{name} must be a count >= {0 if zero_ok else 1} or a fraction in "
                         f"(0, 1), got {value!r}")


def _count(size: int | float, total: int) -> int:
    return round(size * total) if isinstance(size, float) else size
