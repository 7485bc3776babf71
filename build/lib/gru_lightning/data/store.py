"""A tokenized data set on disk: one folder per cache entry, written chunk by chunk as the
texts are encoded and read back lazily, so that what a run holds in memory does not grow
with the number of texts.

    <cache_dir>/<name>-<digest>/
        entry.pt              the classes, the text encoder, each split's labels and size
        <split>-ids.npy       int32 [texts, maxlen]: memory-mapped, batches gathered from it
        <split>-texts.arrow   the texts, an Arrow IPC file of `CHUNK`-text record batches

The folder is built under a temporary name and renamed into place, so an entry that exists
is whole. Processes that map the same ids file (DDP ranks, sweep jobs) share its pages.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

CHUNK = 8192  # texts per record batch, and per step of the encoding
ENTRY = "entry.pt"


class TextColumn(Sequence[str]):
    """One split's texts in an Arrow IPC file, read a record batch at a time with plain
    reads (not a memory map: a batch read is freed after use, so RSS does not grow with the
    file). Slices in order cost one read per batch (the last batch read is kept)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        with pa.OSFile(str(self.path)) as file:
            reader = pa.ipc.open_file(file)
            self._batches = reader.num_record_batches
            last = reader.get_batch(self._batches - 1).num_rows if self._batches else 0
        self._length = CHUNK * max(self._batches - 1, 0) + last
        self._cached: tuple[int, list[str]] | None = None

    def __len__(self) -> int:
        return self._length

    def _batch(self, index: int) -> list[str]:
        if self._cached is None or self._cached[0] != index:
            with pa.OSFile(str(self.path)) as file:
                texts = pa.ipc.open_file(file).get_batch(index).column(0).to_pylist()
            self._cached = (index, texts)
        return self._cached[1]

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            texts: list[str] = []
            while start < stop:
                batch, offset = divmod(start, CHUNK)
                part = self._batch(batch)[offset : offset + stop - start]
                if not part:  # batches of another size than CHUNK: not this writer's file
                    raise ValueError(f"{self.path.name}: no text {start} in batch {batch}")
                texts.extend(part)
                start += len(part)
            return texts
        if not -self._length <= key < self._length:
            raise IndexError(f"text {key} of {self._length}")
        batch, offset = divmod(key % self._length, CHUNK)
        return self._batch(batch)[offset]

    def __iter__(self) -> Iterator[str]:
        for batch in range(self._batches):
            yield from self._batch(batch)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as its path (DDP's spawned ranks)
        return TextColumn, (self.path,)


class TextWriter:
    """Writes texts to a `TextColumn`'s file in batches of exactly `CHUNK` (the last one
    shorter), which is what lets the reader find a text's batch from its index."""

    def __init__(self, path: Path) -> None:
        self._schema = pa.schema([("text", pa.large_string())])
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, self._schema)
        self._pending: list[str] = []
        self.count = 0

    def extend(self, texts: Iterable[str]) -> None:
        self._pending.extend(texts)
        while len(self._pending) >= CHUNK:
            self._flush(self._pending[:CHUNK])
            del self._pending[:CHUNK]

    def _flush(self, texts: list[str]) -> None:
        self._writer.write_batch(pa.record_batch([pa.array(texts, pa.large_string())],
                                                 schema=self._schema))
        self.count += len(texts)

    def close(self) -> int:
        """Write what is left; the number of texts written."""
        if self._pending:
            self._flush(self._pending)
            self._pending = []
        self._writer.close()
        self._sink.close()
        return self.count


def ids_file(folder: Path, split: str) -> Path:
    """Where an entry's folder holds a split's ids."""
    return folder / f"{split}-ids.npy"


def texts_file(folder: Path, split: str) -> Path:
    """Where an entry's folder holds a split's texts."""
    return folder / f"{split}-texts.arrow"


def write_ids(path: Path, chunks: Iterable[torch.Tensor], rows: int, maxlen: int) -> None:
    """Encoded chunks (`[n, maxlen]` each, `rows` in all) into an int32 `.npy` file, one
    chunk in memory at a time."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.int32, shape=(rows, maxlen))
    written = 0
    for chunk in chunks:
        array[written : written + len(chunk)] = chunk.numpy()
        written += len(chunk)
    if written != rows:
        raise RuntimeError(f"{path}: {written} rows encoded, {rows} expected")
    array.flush()
    del array


def read_ids(path: Path, rows: int) -> torch.Tensor:
    """The ids file as a tensor over its memory map (copy-on-write: writable without
    touching the file, and nothing read until a batch gathers it)."""
    array = np.load(path, mmap_mode="c")
    if array.ndim != 2 or len(array) != rows or array.dtype != np.int32:
        raise ValueError(f"{path.name} holds {array.shape} {array.dtype}, expected {rows} rows "
                         "of int32")
    return torch.from_numpy(array)


def build_entry(path: Path, build: Callable[[Path], dict[str, Any]]) -> None:
    """`build(folder)` writes the entry's files into a fresh folder and returns what
    `entry.pt` holds; the folder then replaces `path` whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Under the entry's lock: what a killed build left behind is no one's.
    for stale in path.parent.glob(f"{path.name}.*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.", suffix=".partial"))
    try:
        torch.save(build(partial), partial / ENTRY)
        # The old entry out of the way by a rename, not deleted first: files a running
        # process has open or mapped stay valid, and the entry is missing for no moment
        # longer than between two renames.
        old = path.with_name(f"{partial.name}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def read_entry(path: Path) -> dict[str, Any]:
    """What `entry.pt` holds, with each split's ids (memory-mapped) under "ids" and its
    texts (a `TextColumn`) under "texts"; raises when a file is missing or damaged."""
    entry = torch.load(path / ENTRY, weights_only=True)
    if missing := {"labels", "text_encoder", "class_names"} - set(entry):
        raise ValueError(f"{ENTRY} has no {sorted(missing)}")
    labels = entry["labels"]
    if "train" not in labels or "test" not in labels:
        raise ValueError(f"{ENTRY} has splits {sorted(labels)}, not train and test")
    entry["ids"] = {split: read_ids(ids_file(path, split), len(labels[split]))
                    for split in labels}
    entry["texts"] = {split: TextColumn(texts_file(path, split)) for split in labels}
    for split, texts in entry["texts"].items():
        if len(texts) != len(labels[split]):
            raise ValueError(f"{texts.path.name} holds {len(texts)} texts, expected "
                             f"{len(labels[split])}")
    return entry

