"""Derived data on disk (fitted n-gram models, word vectors; the tokenized data's folders are
store.py's, under the same lock): written whole or not at all, built once for parallel sweep
jobs, and rebuilt when damaged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from gru_lightning.data.errors import DataError

log = logging.getLogger(__name__)


def keyed_path(folder: Path, prefix: str, key: dict[str, Any], suffix: str = "") -> Path:
    """`folder/<prefix>-<digest><suffix>`, the digest naming everything in `key` (JSON, keys
    sorted): an entry of derived data that changes name whenever what it is built from does."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"{prefix}-{digest}{suffix}"


def save_atomically(data: Any, path: Path) -> None:
    """Write then rename: a crash never leaves a half-written file behind."""
    partial = path.with_suffix(f".{os.getpid()}.partial")
    torch.save(data, partial)
    os.replace(partial, path)


def check_writable(folder: Path) -> None:
    """Make `folder` where missing and write a file in it, or one message naming the setting
    (rather than a traceback from the first cache write, after reading the data)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise DataError(f"the cache folder {str(folder)!r} cannot be written "
                        f"({error.strerror or error}): set paths.cache_dir to a folder of "
                        "yours") from None


def lock(path: Path) -> FileLock:
    """The lock that parallel jobs take around building or healing `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


def load_or_build(path: Path, build: Callable[[], Any], what: str,
                  check: Callable[[Any], None] | None = None, say_found: bool = True) -> Any:
    """The cached value at `path`, or `build()`'s, saved there. A file that does not load (or
    that `check` rejects) is derived data: it is rebuilt, with a warning. `say_found=False`
    where the caller has said it already."""
    with lock(path):
        try:
            value = torch.load(path, weights_only=True)
            if check is not None:
                check(value)
            if say_found:
                log.info("%s found in cache %s", what, path)
            return value
        except FileNotFoundError:
            pass
        except Exception as error:
            reason = str(error).splitlines()[0] if str(error) else ""
            log.warning("The cached %s %s is unreadable (%s: %s); it is derived data, so it is "
                        "built again", what.lower(), path, type(error).__name__, reason)
        value = build()
        save_atomically(value, path)
        log.info("Cached the %s to %s", what.lower(), path)
        return value
