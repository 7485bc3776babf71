"""`TextDataModule`: a source's raw splits as padded id tensors, checked, cached and batched.

    read (the source) -> check columns, labels, texts (checks.py) -> hold out test and
    validation texts (seeded) -> fit the vocabulary on the training texts -> encode and pad
    (preprocessing.py) -> cache (cache.py) -> batches (batches.py)
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import tokenizers
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from gru_lightning.data import adaptive, cache
from gru_lightning.data.base import DataError, TextSource
from gru_lightning.data.batches import SliceBatchSampler, TensorBatchDataset, batch_as_is
from gru_lightning.data.checks import check_size, kept_rows, split_columns
from gru_lightning.preprocessing import FORMAT_VERSION, Side, TextEncoder, check_side

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the cached content changes (2: label names)


def count(size: int | float, total: int) -> int:
    """A hold-out size (a count, or a share of `total`) as a count."""
    return round(size * total) if isinstance(size, float) else size


class TextDataModule(L.LightningDataModule):
    """Labeled texts from `source` as padded id tensors.

    Args:
        source: where the texts come from (a `TextSource`; conf/data/ builds one per file).
        max_features: vocabulary size, padding and unknown ids included; "auto": the words
            seen twice or more in the training texts (data/adaptive.py).
        maxlen: tokens per text after padding/truncation; "auto": the 95th percentile of the
            training texts' word counts.
        padding, truncating: "pre" (Keras' default: keep the last `maxlen` tokens, pad in
            front) or "post".
        punctuation: also keep "!" and "?" as words (the notebook's word index drops them).
        val_size: training texts held out for validation (an int), or a fraction in
            (0, 1); 0 validates on the test split, as the Keras notebook did. Not used where
            the source has a validation split of its own. "auto": a tenth, at most 5,000.
        split_seed: seed of the hold-outs (validation, and test where the source has no test
            split), fixed apart from the run's seed so that runs with different seeds share
            them (and one cache entry).
        batch_size: training batch size; eval_batch_size: for validation and test.
        cache_dir: where tokenized splits are cached, keyed by everything that changes them.
        tensors_on_device: on an accelerator, move the splits to it once in `setup`, so each
            batch is gathered on the device with no host-to-device copy (IMDB at maxlen 100
            is ~20 MB). No effect on the CPU.
    """

    def __init__(
        self,
        source: TextSource,
        max_features: int | str = 10000,
        maxlen: int | str = 100,
        padding: Side = "pre",
        truncating: Side = "pre",
        punctuation: bool = False,
        val_size: int | float | str = 1000,
        split_seed: int = 42,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        cache_dir: str = ".cache",
        tensors_on_device: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("maxlen", maxlen), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size)):
            if name == "maxlen" and adaptive.is_auto(value):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {value!r}")
        if not adaptive.is_auto(max_features) and (
                isinstance(max_features, bool) or not isinstance(max_features, int)
                or max_features < 3):
            raise ValueError(f"data.max_features must be an integer >= 3 or auto, got "
                             f"{max_features!r}")
        check_side("data.padding", padding)
        check_side("data.truncating", truncating)
        if not adaptive.is_auto(val_size):
            check_size("data.val_size", val_size, zero_ok=True)
        self.source = source
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
        self.class_values: list[str] | None = None  # the raw training label of each class
        self.splits: dict[str, TensorBatchDataset] = {}
        self.cache_hit: bool | None = None  # set by prepare_data: was tokenization skipped?

    @property
    def num_classes(self) -> int:
        """Classes of the data; known after `setup`."""
        if not self.class_names:
            raise RuntimeError("num_classes is known after setup()")
        return len(self.class_names)

    def class_counts(self) -> torch.Tensor:
        """Training texts per class, in the order of `class_names`; known after `setup`."""
        labels = self.splits["train"].labels.long().cpu()
        return torch.bincount(labels, minlength=self.num_classes)

    @property
    def has_validation_split(self) -> bool:
        """Whether validation texts are held out of training (else validation is the test)."""
        return "val" in self.splits and self.splits["val"] is not self.splits["test"]

    # ---- the cache entry ------------------------------------------------------------------

    def cache_path(self) -> Path:
        """The tokenized data's file, named by everything that changes its content."""
        source = self.source
        key = {
            "source": source.signature(),
            "text_columns": list(source.text_columns),
            "label_column": source.label_column,
            "label_names": list(source.label_names) if source.label_names else None,
            "test_size": source.test_size,
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
        return self.cache_dir / f"{source.cache_name}-{digest}.pt"

    @staticmethod
    def _texts_path(path: Path) -> Path:
        return path.with_name(path.stem + "-texts.pt")

    def _build(self) -> dict[str, Any]:
        """Read, check, hold out, fit the vocabulary and encode: the cache entry's content,
        with each split's texts (after the checks and hold-outs) under "texts"."""
        start = time.perf_counter()
        source = self.source
        setting = source.setting()
        raw = source.read()
        columns = {split: split_columns(data, source.text_columns, source.label_column, split,
                                        setting) for split, data in raw.items()}
        feature = raw["train"].features.get(source.label_column)
        names = getattr(feature, "names", None)  # a datasets.ClassLabel's
        ids, class_names = source.check_labels({s: c[1] for s, c in columns.items()}, names)
        rows = {split: kept_rows(split, columns[split][0], setting) for split in columns}
        # The raw training label of each class (where the data names no classes itself), so
        # a labelled file scored later maps its labels as training did (evaluate.py).
        class_values = (None if names is not None else
                        [str(v) for v in sorted({columns["train"][1][i] for i in rows["train"]})])
        texts = {split: [columns[split][0][i] for i in rows[split]] for split in columns}
        labels = {split: [ids[split][i] for i in rows[split]] for split in columns}

        train_texts, train_labels = texts["train"], labels["train"]
        generator = torch.Generator().manual_seed(self.split_seed)
        if "test" not in raw:
            # No test split of its own: hold out a seeded share of the training texts.
            n_test = count(source.test_size or 0, len(train_labels))
            if not 0 < n_test < len(train_labels):
                raise DataError(f"{setting} has no test split: set data.test_size to the share "
                                "(e.g. 0.2) or number of texts to hold out for testing")
            order = torch.randperm(len(train_labels), generator=generator).tolist()
            test_rows, rest = order[:n_test], sorted(order[n_test:])
            texts["test"] = [train_texts[i] for i in test_rows]
            labels["test"] = [train_labels[i] for i in test_rows]
            train_texts = [train_texts[i] for i in rest]
            train_labels = [train_labels[i] for i in rest]
        n_train = len(train_labels)
        if "val" in raw:  # the source's own validation split: nothing held out for it
            log.info("Validating on the val split of %s (%d texts); data.val_size is not "
                     "used", setting, len(labels["val"]))
            fit_rows = list(range(n_train))
        else:
            n_val = (adaptive.validation_size(n_train) if adaptive.is_auto(self.val_size)
                     else count(self.val_size, n_train))
            if n_val >= n_train:
                raise ValueError(f"data.val_size={self.val_size} leaves no training texts "
                                 f"(the train split has {n_train})")
            # A split may be sorted by label (IMDB's is): hold out a seeded random subset.
            order = torch.randperm(n_train, generator=generator)
            val_rows, fit_rows = order[:n_val].tolist(), order[n_val:].tolist()
        split_texts = {"train": [train_texts[i] for i in fit_rows], "test": texts["test"]}
        split_labels = {"train": [train_labels[i] for i in fit_rows], "test": labels["test"]}
        if "val" in raw:
            split_texts["val"], split_labels["val"] = texts["val"], labels["val"]
        elif n_val:
            split_texts["val"] = [train_texts[i] for i in val_rows]
            split_labels["val"] = [train_labels[i] for i in val_rows]
        # The vocabulary sees only the texts the model trains on.
        encoder = adaptive.fit_encoder(split_texts["train"], self.max_features, self.maxlen,
                                       self.padding, self.truncating, self.punctuation)
        # Two classes: one logit and BCE, float targets; more: class ids for cross-entropy.
        label_dtype = torch.float32 if len(class_names) == 2 else torch.int64
        # int32 ids halve memory at long maxlen; nn.Embedding takes them as they are.
        splits = {split: {"ids": encoder.encode(split_texts[split]).to(torch.int32),
                          "labels": torch.tensor(split_labels[split], dtype=label_dtype)}
                  for split in ("train", "test", "val") if split in split_texts}
        log.info("Tokenized %s (%s train, %s val, %s test texts, %d classes: %s) in %.1f s",
                 setting, len(fit_rows), len(split_labels.get("val", ())),
                 len(splits["test"]["labels"]), len(class_names),
                 ", ".join(class_names), time.perf_counter() - start)
        return {"splits": splits, "text_encoder": encoder.to_dict(),
                "class_names": class_names, "class_values": class_values,
                "texts": split_texts}

    def _write(self, path: Path) -> None:
        cache.save_atomically(self._build_tensors(path), path)
        log.info("Cached the tokenized data to %s", path)

    def prepare_data(self) -> None:
        if self.splits:  # set up in this process already (train.py reads the classes early)
            return
        path = self.cache_path()
        # Parallel sweep jobs wait for the one that tokenizes, then all read its cache.
        with cache.lock(path):
            self.cache_hit = path.exists()
            if self.cache_hit:
                log.info("Tokenized data found in cache %s: skipping tokenization", path)
                return
            self._write(path)

    def split_texts(self) -> dict[str, list[str]]:
        """The texts of each split, in the order of `splits` (what the tensors encode), for
        stages that read raw text: the cached texts, or, for a cache entry without them, the
        data read and tokenized again."""
        path = self.cache_path()
        texts_path = self._texts_path(path)
        try:
            texts = torch.load(texts_path, weights_only=True)["texts"]
        except Exception as error:  # derived data: rebuild it
            log.warning("The cached texts %s are missing or unreadable (%s); the data is read "
                        "and tokenized again", texts_path, type(error).__name__)
            with cache.lock(path):
                self._write(path)
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
            for split in {id(s): s for s in self.splits.values()}.values():
                split.to(device)

    def _load_splits(self) -> None:
        path = self.cache_path()
        if not path.exists():  # setup without prepare_data, e.g. called by hand
            self.prepare_data()

        def check(data: Any) -> None:
            if "train" not in data.get("splits", {}) or "class_names" not in data:
                raise ValueError("splits or class names missing")

        data = cache.load_or_build(path, lambda: self._build_tensors(path), "Tokenized data",
                                   check, say_found=False)  # prepare_data said it
        self.text_encoder = TextEncoder.from_dict(data["text_encoder"])
        self.class_names = list(data["class_names"])
        self.class_values = data.get("class_values")
        self.splits = {name: TensorBatchDataset(s["ids"], s["labels"])
                       for name, s in data["splits"].items()}
        # val_size=0: validate on the test split, as the Keras notebook did.
        self.splits.setdefault("val", self.splits["test"])

    def _build_tensors(self, path: Path) -> dict[str, Any]:
        data = self._build()
        # The texts in a file of their own, read only by the stages that need them (e.g. the
        # n-gram stack), and first: the tensors' file is what says the entry is complete.
        cache.save_atomically({"texts": data.pop("texts")}, self._texts_path(path))
        return data

    # ---- batches --------------------------------------------------------------------------

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, batch_sampler=SliceBatchSampler(sampler, batch_size, False),
                          collate_fn=batch_as_is)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
