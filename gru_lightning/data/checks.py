"""Checks of raw data before any tokenization, as plain functions: the columns, the texts,
the labels and the hold-out sizes. Each problem is a `DataError` that names the setting, the
split, a value and its rows (counted from 0 in that split)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from gru_lightning.data.errors import DataError

log = logging.getLogger(__name__)
SHOWN_ROWS = 5  # rows named in a message


def shown_rows(rows: Sequence[int]) -> str:
    shown = ", ".join(map(str, rows[:SHOWN_ROWS]))
    return shown + (f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else "")


def rows_by_value(values: Sequence[Any], wanted: Callable[[Any], bool]) -> dict[Any, list[int]]:
    """Rows of the values for which `wanted(value)` is false, grouped by value."""
    bad: dict[Any, list[int]] = {}
    for row, value in enumerate(values):
        if not wanted(value):
            bad.setdefault(value, []).append(row)
    return bad


def describe(bad: dict[Any, list[int]]) -> str:
    """`rows_by_value`'s result in words: "2 in row(s) 7, 9"."""
    return "; ".join(f"{value!r} in row(s) {shown_rows(rows)}" for value, rows in bad.items())


def column_list(columns: str | Sequence[str]) -> list[str]:
    """Column names as a list: `data.text_columns=review` (no brackets) is that one column,
    not its letters."""
    return [columns] if isinstance(columns, str) else list(columns)


def has_text(cell: Any) -> bool:
    # isspace() stops at the first other character; strip() would copy the whole text.
    return isinstance(cell, str) and cell != "" and not cell.isspace()


def joined_texts(columns: Sequence[Sequence[Any]]) -> list[str | None]:
    """One text per row from one or several text columns, joined by a space (a null cell
    counts as empty); None where the row has no text at all."""
    if len(columns) == 1:  # the common case, without a join per row
        return [c if has_text(c) else None for c in columns[0]]
    texts = []
    for cells in zip(*columns, strict=True):
        parts = [c for c in cells if has_text(c)]
        texts.append(" ".join(parts) if parts else None)
    return texts


def check_columns(dataset: Any, text_columns: Sequence[str], label_column: str, split: str,
                  setting: str) -> None:
    """That the split has the text and label columns."""
    columns = dataset.column_names
    if missing := [c for c in (*text_columns, label_column) if c not in columns]:
        raise DataError(f"{setting}, {split} split: no column(s) {missing} (columns: "
                        f"{columns}); set data.text_columns and data.label_column")


def text_chunks(dataset: Any, text_columns: Sequence[str], rows: Any = None,
                size: int = 8192) -> Iterator[list[str | None]]:
    """A split's texts (`joined_texts`), `size` rows at a time: all rows in order, or those
    of the index tensor `rows`. Batches are read from the Arrow table (iterating a datasets
    Column decodes row by row, ~10x slower), so only one is in memory at a time."""
    table = dataset.select_columns(list(text_columns))
    total = len(dataset) if rows is None else len(rows)
    for start in range(0, total, size):
        key = (slice(start, start + size) if rows is None
               else rows[start : start + size].tolist())
        batch = table[key]
        yield joined_texts([batch[c] for c in text_columns])


def split_columns(dataset: Any, text_columns: Sequence[str], label_column: str, split: str,
                  setting: str) -> tuple[list[str | None], list[Any]]:
    """A split's texts (`joined_texts`) and raw labels, all in memory (a labelled file to
    evaluate on)."""
    check_columns(dataset, text_columns, label_column, split, setting)
    texts = [t for chunk in text_chunks(dataset, text_columns) for t in chunk]
    return texts, list(dataset[label_column][:])


def kept_rows(split: str, texts: Iterable[str | None], setting: str) -> list[int]:
    """Rows that have text. A text that is null, empty or only whitespace carries no evidence
    for its label: it is left out, with a warning naming its rows."""
    total, empty = 0, []
    for row, text in enumerate(texts):
        total += 1
        if not has_text(text):
            empty.append(row)
    if len(empty) == total:
        raise DataError(f"{setting}, {split} split: no row has any text")
    if empty:
        log.warning("%s, %s split: %d text(s) with nothing in them (null or blank) left out: "
                    "row(s) %s", setting, split, len(empty), shown_rows(empty))
    skip = set(empty)
    return [row for row in range(total) if row not in skip]


def label_ids(labels: dict[str, Sequence[Any]], column: str, setting: str,
              class_names: Sequence[str] | None = None,
              label_names: Sequence[str] | None = None) -> tuple[dict[str, list[int]], list[str]]:
    """Labels mapped to ids 0..K-1, and the class names.

    `class_names`: the data's own names (a `datasets.ClassLabel`), whose ids the labels
    already are. Otherwise the classes are the distinct training labels (ints or strings) in
    sorted order, named `label_names` when given, else by their values. Null labels, a single
    class and a test label never seen in training are errors."""
    where = f"{setting}, column {column!r}"
    for split, values in labels.items():
        if nulls := [row for row, v in enumerate(values) if v is None]:
            raise DataError(f"{where}, {split} split: no label in row(s) {shown_rows(nulls)}; "
                            "fill them in or drop those rows")
    if class_names is not None:
        k = len(class_names)
        for split, values in labels.items():
            bad = rows_by_value(values, lambda v, k=k: isinstance(v, int) and 0 <= v < k)
            if bad:
                raise DataError(f"{where}, {split} split: labels must be ids of "
                                f"{list(class_names)} (0 to {k - 1}), found {describe(bad)}")
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
        if bad := rows_by_value(values, lambda v: v in index):
            raise DataError(f"{where}, {split} split: label(s) never seen in training: "
                            f"{describe(bad)} (training has {classes})")
        ids[split] = [index[v] for v in values]
    return ids, names


def check_size(name: str, value: Any, zero_ok: bool) -> int | float:
    """A count of texts (an int) or a share of them (a float in (0, 1))."""
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value >= (0 if zero_ok else 1))
        or (isinstance(value, float) and 0 < value < 1)
    ):
        raise ValueError(f"{name} must be a count >= {0 if zero_ok else 1} or a fraction in "
                         f"(0, 1), got {value!r}")
    return value


def optional_size(name: str, value: int | float | None) -> int | float | None:
    """`check_size` for a hold-out that may be absent (None)."""
    return None if value is None else check_size(name, value, zero_ok=False)
