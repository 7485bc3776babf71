"""Checks of settings that many constructors share, with one message format: the setting's
name as the user writes it (`data.batch_size`), what it must be, and the value given."""

from __future__ import annotations

from typing import Any


def positive_int(setting: str, value: Any) -> None:
    """A count, e.g. `positive_int("data.batch_size", 0)` refuses with "data.batch_size must
    be a positive integer, got 0"; True and 1.0 are not integers here."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{setting} must be a positive integer, got {value!r}")
