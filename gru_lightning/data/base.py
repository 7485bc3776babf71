"""The source contract: where labeled texts come from.

A source reads its raw splits and says what identifies them; `TextDataModule`
(`datamodule.py`) does everything after reading: checks, hold-outs, vocabulary, encoding,
caching and batching. One source per file in this package, each with a config in
`conf/data/`. A new source is a `TextSource` subclass with three methods:

    class MySource(TextSource):
        def __init__(self, path: str | None = None) -> None: ...
        def read(self) -> dict[str, datasets.Dataset]: ...   # "train", and "test" if any
        def signature(self) -> dict[str, Any]: ...           # cheap: sizes, mtimes, a name
        def setting(self) -> str: ...                         # e.g. "data.path='x.csv'"

and `conf/data/my_source.yaml` with `source: my_package.MySource` beside the data module's
`_target_` (`gru_lightning.data.datamodule.TextDataModule.from_settings`), the source's
arguments and the shared settings (`defaults: [_common, _self_]`). In Python:
`TextDataModule.from_settings(MySource, **settings)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gru_lightning.data.checks import label_ids
from gru_lightning.data.errors import DataError, DatasetUnavailableError

__all__ = ["DataError", "DatasetUnavailableError", "TextSource", "file_signature",
           "import_datasets"]


class TextSource:
    """Reads the raw splits of one kind of data; see the module docstring for the contract.

    The class attributes say where the text and label are and what the classes are called; a
    source whose settings change them sets them per instance.
    """

    text_columns: Sequence[str] = ("text",)  # joined by a space where several
    label_column: str = "label"
    label_names: Sequence[str] | None = None  # names of the sorted label values
    test_size: int | float | None = None  # held out of train where there is no test split
    cache_name: str = "data"  # the cache file's prefix

    def read(self) -> dict[str, Any]:
        """The raw splits as `datasets.Dataset`s: "train", and "test" where the source has
        one. Errors reaching the data raise `DatasetUnavailableError`."""
        raise NotImplementedError

    def signature(self) -> dict[str, Any]:
        """What identifies the raw data, cheaply (no reading), for the cache key: e.g. files'
        sizes and modification times, or a Hub name."""
        raise NotImplementedError

    def setting(self) -> str:
        """The setting that names the data, for messages, e.g. data.train_file='x.csv'."""
        raise NotImplementedError

    @classmethod
    def datamodule(cls, **settings: Any) -> None:
        """The data module's factory until release 0.6.0 (`_target_: <Source>.datamodule`): a
        config that still names it is told the form that replaced it."""
        raise ValueError(
            f"{cls.__name__}.datamodule is gone since gru-lightning 0.7.0: a data config says "
            f"`_target_: gru_lightning.data.datamodule.TextDataModule.from_settings` and "
            f"`source: {cls.__module__}.{cls.__qualname__}` (as conf/data/files.yaml); in "
            f"Python, TextDataModule.from_settings({cls.__name__}, ...)")

    def check_labels(self, labels: dict[str, list[Any]], class_names: list[str] | None,
                     ) -> tuple[dict[str, list[int]], list[str]]:
        """Label ids 0..K-1 per split and the class names (`checks.label_ids`); a source may
        be stricter. `class_names`: the data's own (a `datasets.ClassLabel`'s)."""
        return label_ids(labels, self.label_column, self.setting(), class_names,
                         self.label_names)


def import_datasets() -> Any:
    import datasets  # deferred: a cached run never needs it, and it is slow to import

    return datasets


def file_signature(paths: Sequence[Path]) -> list[tuple[str, int, int]]:
    """Each file's resolved path, size and modification time: changes when the file does."""
    return [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
