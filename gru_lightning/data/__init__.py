"""Data: a source (one file each: imdb, hub, files, folder, lines; the contract in base.py) composed
by `TextDataModule` (datamodule.py) with the checks, the cache and the batches.

The names below are imported on first use: `predict` reads the cache module without paying
for Lightning's import."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"DataError": "errors", "DatasetUnavailableError": "errors", "TextSource": "base",
          "TextDataModule": "datamodule", "FilesSource": "files", "FolderSource": "folder",
          "HubSource": "hub", "IMDBSource": "imdb", "LinesSource": "lines"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
