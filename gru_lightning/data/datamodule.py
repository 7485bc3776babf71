"""`TextDataModule`: a source's raw splits as padded id tensors, checked, cached and batched.

    read (the source) -> check columns, labels, texts (checks.py) -> hold out test and
    validation texts (seeded) -> each split's texts to disk -> fit the vocabulary on the
    training texts -> encode and pad (preprocessing.py) into memory-mapped ids (store.py)
    -> batches gathered from them (batches.py)

A chunk of texts at a time: a million reviews prepare in the memory of a few thousand.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import tokenizers
import torch
from hydra.utils import get_class
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from gru_lightning.data import adaptive, cache, store
from gru_lightning.data.base import TextSource
from gru_lightning.data.batches import SliceBatchSampler, TensorBatchDataset, batch_as_is
from gru_lightning.data.checks import check_columns, check_size, kept_rows, text_chunks
from gru_lightning.data.holdout import holdout_plan
from gru_lightning.preprocessing import (
    FORMAT_VERSION,
    Side,
    TextEncoder,
    check_side,
    in_batches,
)
from gru_lightning.settings import positive_int

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when the cached content changes (3: a folder, store.py)


@dataclass(frozen=True)
class LabeledRows:
    """What the checks of the raw splits find: per raw split the rows that have text and
    every row's label id, the class names, and the raw training label of each class (where
    the data names no classes itself)."""

    kept: dict[str, torch.Tensor]
    label_ids: dict[str, torch.Tensor]
    class_names: list[str]
    class_values: list[str] | None


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
            positive_int(f"data.{name}", value)
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

    @classmethod
    def from_settings(cls, source: str | type[TextSource], **settings: Any) -> TextDataModule:
        """A data module over `source` (a `TextSource` class, or its import path as a config in
        conf/data/ gives it) from one flat set of settings: the source's constructor takes its
        own, the data module the rest."""
        source_class = get_class(source) if isinstance(source, str) else source
        if not (isinstance(source_class, type) and issubclass(source_class, TextSource)):
            raise ValueError(f"data.source must name a TextSource class, got {source!r}")
        own = set(inspect.signature(source_class.__init__).parameters) - {"self"}
        return cls(source_class(**{k: v for k, v in settings.items() if k in own}),
                   **{k: v for k, v in settings.items() if k not in own})

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
        """The tokenized data's folder (store.py), named by everything that changes its
        content."""
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
        return cache.keyed_path(self.cache_dir, source.cache_name, key)

    def derived_cache_path(self, prefix: str, key: dict[str, Any]) -> Path:
        """The cache file of something built from this data (an n-gram model, word vectors):
        named by the data's cache entry and `key`, the settings that change it."""
        return cache.keyed_path(self.cache_dir, prefix, {"data": self.cache_path().name, **key},
                                ".pt")

    def attach(self, split: str, columns: dict[str, torch.Tensor]) -> None:
        """Add per-text `columns` (a first dimension of the split's size) to `split`: gathered
        with its ids in every batch, under their names (a stacked model's features)."""
        for name, values in columns.items():
            self.splits[split].add_column(name, values)

    def _labeled_rows(self, raw: dict[str, Any]) -> LabeledRows:
        """The checks of the raw splits: columns, labels (only the label column is read
        whole) and texts (a chunk at a time)."""
        source, setting = self.source, self.source.setting()
        for split, data in raw.items():
            check_columns(data, source.text_columns, source.label_column, split, setting)
        raw_labels = {split: list(data[source.label_column][:]) for split, data in raw.items()}
        feature = raw["train"].features.get(source.label_column)
        names = getattr(feature, "names", None)  # a datasets.ClassLabel's
        ids, class_names = source.check_labels(raw_labels, names)
        kept = {split: torch.tensor(kept_rows(split, (t for chunk in text_chunks(
                    data, source.text_columns) for t in chunk), setting), dtype=torch.long)
                for split, data in raw.items()}
        # So a labelled file scored later maps its labels as training did (evaluate.py).
        class_values = (None if names is not None else
                        [str(v) for v in sorted({raw_labels["train"][i]
                                                 for i in kept["train"].tolist()})])
        return LabeledRows(kept, {split: torch.tensor(ids[split], dtype=torch.long)
                                  for split in raw}, class_names, class_values)

    def _build(self, folder: Path) -> dict[str, Any]:
        """Read, check, hold out, fit the vocabulary and encode, into the cache entry's
        `folder` (store.py) a chunk at a time; returns what its entry.pt holds."""
        start = time.perf_counter()
        source = self.source
        raw = source.read()
        checked = self._labeled_rows(raw)
        if "val" in raw:
            log.info("Validating on the val split of %s (%d texts); data.val_size is not "
                     "used", source.setting(), len(checked.kept["val"]))
        plan = holdout_plan(checked.kept, source.test_size, self.val_size, self.split_seed,
                            source.setting())
        class_names = checked.class_names
        labels = {split: checked.label_ids[part.origin][part.rows]
                  for split, part in plan.items()}
        texts = {}
        for split, part in plan.items():
            writer = store.TextWriter(store.texts_file(folder, split))
            try:
                for chunk in text_chunks(raw[part.origin], source.text_columns, part.rows):
                    writer.extend(chunk)
            finally:
                writer.close()
            texts[split] = store.TextColumn(store.texts_file(folder, split))
        del raw  # the source's tables: what follows reads the split texts just written
        # The vocabulary sees only the texts the model trains on.
        encoder = adaptive.fit_encoder(texts["train"], self.max_features, self.maxlen,
                                       self.padding, self.truncating, self.punctuation)
        for split, column in texts.items():
            # int32 ids halve memory at long maxlen; nn.Embedding takes them as they are.
            store.write_ids(store.ids_file(folder, split),
                            (encoder.encode(chunk) for chunk in in_batches(column, store.CHUNK)),
                            len(column), encoder.maxlen)
        # Two classes: one logit and BCE, float targets; more: class ids for cross-entropy.
        label_dtype = torch.float32 if len(class_names) == 2 else torch.int64
        log.info("Tokenized %s (%s train, %s val, %s test texts, %d classes: %s) in %.1f s",
                 source.setting(), len(texts["train"]), len(texts.get("val", ())),
                 len(texts["test"]), len(class_names), ", ".join(class_names),
                 time.perf_counter() - start)
        return {"labels": {split: values.to(label_dtype) for split, values in labels.items()},
                "text_encoder": encoder.to_dict(), "class_names": class_names,
                "class_values": checked.class_values}

    def _write(self, path: Path) -> None:
        store.build_entry(path, self._build)
        log.info("Cached the tokenized data to %s", path)

    def prepare_data(self) -> None:
        if self.splits:  # set up in this process already (train.py reads the classes early)
            return
        path = self.cache_path()  # checks the source first: a wrong path writes nothing
        cache.check_writable(self.cache_dir)
        # Parallel sweep jobs wait for the one that tokenizes, then all read its cache.
        with cache.lock(path):
            self.cache_hit = path.exists()
            if self.cache_hit:
                log.info("Tokenized data found in cache %s: skipping tokenization", path)
                return
            self._write(path)

    def _entry(self) -> dict[str, Any]:
        """The cache entry (store.read_entry); one that is damaged is derived data: it is
        built again, with a warning."""
        path = self.cache_path()
        with cache.lock(path):
            try:
                return store.read_entry(path)
            except FileNotFoundError as error:
                if not path.exists():  # setup without prepare_data, e.g. called by hand
                    self._write(path)
                    return store.read_entry(path)
                reason = f"{Path(error.filename).name if error.filename else error} is missing"
            except Exception as error:
                first = str(error).splitlines()[0] if str(error) else ""
                reason = f"{type(error).__name__}: {first}"
            log.warning("The cached tokenized data %s is unreadable (%s); it is derived data, "
                        "so it is built again", path, reason)
            self._write(path)
            return store.read_entry(path)

    def split_texts(self) -> dict[str, Sequence[str]]:
        """The texts of each split, in the order of `splits` (what the tensors encode), for
        stages that read raw text: each a `store.TextColumn`, read from disk as it is used."""
        texts = self._entry()["texts"]
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
        entry = self._entry()
        self.text_encoder = TextEncoder.from_dict(entry["text_encoder"])
        self.class_names = list(entry["class_names"])
        self.class_values = entry.get("class_values")
        self.splits = {name: TensorBatchDataset(entry["ids"][name], labels,
                                                store.ids_file(self.cache_path(), name))
                       for name, labels in entry["labels"].items()}
        # val_size=0: validate on the test split, as the Keras notebook did.
        self.splits.setdefault("val", self.splits["test"])

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
