"""Texts and labels from local files (`data=files`): CSV, TSV, JSON Lines or parquet."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gru_lightning.data.base import (
    DatasetUnavailableError,
    TextSource,
    file_signature,
    import_datasets,
)
from gru_lightning.data.checks import column_list, optional_size

PARQUET_BATCH = 10_000  # rows per batch converted to datasets' Arrow cache
FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".json": "json",
                ".parquet": "parquet"}


class FilesSource(TextSource):
    """Texts and labels from local files: CSV, TSV, JSON Lines or parquet, one file per
    split, or a single file with a seeded test hold-out (`test_size`).

    Args:
        train_file: the training file (the format from its extension, or `file_format`).
        test_file: the test file; None holds out `test_size` of the training file.
        val_file: a validation file; None holds out `data.val_size` of the training file.
        file_format: csv, tsv, json (JSON Lines) or parquet; None: from the extension.
        text_columns: one or several text columns, joined by a space (e.g. [title,
            description]).
        label_column: the label column: ints or strings.
        label_names: names for the classes, in the order of their sorted label values (e.g.
            AG News' 1-4: [World, Sports, Business, Sci/Tech]).
        test_size: texts held out for testing (a count or a share) when there is no test_file.
    """

    def __init__(self, train_file: str | None = None, test_file: str | None = None,
                 val_file: str | None = None,
                 file_format: str | None = None, text_columns: str | Sequence[str] = ("text",),
                 label_column: str = "label", label_names: Sequence[str] | None = None,
                 test_size: int | float | None = 0.2) -> None:
        if file_format is not None and file_format not in FILE_FORMATS.values():
            raise ValueError(f"data.file_format must be one of {sorted(set(FILE_FORMATS.values()))}"
                             f" or null, got {file_format!r}")
        self.files = {"train": train_file, "test": test_file, "val": val_file}
        self.file_format = file_format
        self.text_columns, self.label_column = column_list(text_columns), label_column
        self.label_names = list(label_names) if label_names else None
        self.test_size = None if test_file else optional_size("data.test_size", test_size)

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

    def setting(self) -> str:
        return f"data.train_file={self.files['train']!r}"

    def signature(self) -> dict[str, Any]:
        paths = self._paths()
        return {"files": {split: file_signature([p]) for split, p in paths.items()},
                "format": self.file_format}

    def read(self) -> dict[str, Any]:
        datasets = import_datasets()
        paths = self._paths()
        formats = {self._format(p) for p in paths.values()}
        if len(formats) > 1:
            raise DatasetUnavailableError(f"the data files differ in format: {formats}")
        found = formats.pop()
        options: dict[str, Any] = {"delimiter": "\t"} if found == "tsv" else {}
        if found == "parquet":
            import pyarrow.dataset

            # Batches from buffered reads, not the whole file buffered; the scan still holds
            # one row group decoded (pyarrow writes up to a million rows per group: README).
            options = {"batch_size": PARQUET_BATCH, "fragment_scan_options":
                       pyarrow.dataset.ParquetFragmentScanOptions(
                           pre_buffer=False, use_buffered_stream=True, buffer_size=1 << 20)}
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
