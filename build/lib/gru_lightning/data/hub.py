"""Any text classification data set on the Hugging Face Hub (`data=hub`), and the Hub access
that IMDB's source shares."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from gru_lightning.data.base import DataError, DatasetUnavailableError, TextSource, import_datasets
from gru_lightning.data.checks import column_list, optional_size


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connect to the Hub, so an offline machine fails in seconds instead of after
    `datasets`' ~25 s of retries."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in {"1", "ON", "YES", "TRUE"}


def load_from_hub(name: str, config_name: str | None, hint: str) -> Any:
    """`datasets.load_dataset(name, config_name)`, failing in seconds with `hint` when the Hub
    is unreachable and the data set is not cached."""
    datasets = import_datasets()
    if not hub_offline() and not hub_reachable():
        raise DatasetUnavailableError(
            f"Cannot load {name!r}: the Hugging Face Hub is unreachable from this machine.\n"
            f"{hint}\nIf the data set is already in your Hugging Face cache, set "
            "HF_HUB_OFFLINE=1.")
    try:
        return datasets.load_dataset(name, config_name)
    except Exception as error:  # the Hub raises many types; the message is what matters
        raise DatasetUnavailableError(
            f"Could not load {name!r} from the Hugging Face Hub: {error}\n{hint}") from error


class HubSource(TextSource):
    """Any text classification data set on the Hugging Face Hub, e.g. ag_news,
    yelp_polarity, or glue/sst2 (name=glue config_name=sst2 text_columns=[sentence]).

    Args:
        name: the data set's name on the Hub.
        config_name: its configuration, where it has several.
        train_split, test_split: split names; test_split=None holds out `test_size`.
        val_split: the validation split's name; None holds out `data.val_size` of train.
        text_columns: one or several text columns, joined by a space.
        label_column: the label column: a ClassLabel (its names are used), ints or strings.
        label_names: names for the classes, in the order of their sorted label values.
        test_size: texts held out for testing (a count or a share) where there is no test
            split.
    """

    def __init__(self, name: str = "ag_news", config_name: str | None = None,
                 train_split: str = "train", test_split: str | None = "test",
                 val_split: str | None = None,
                 text_columns: str | Sequence[str] = ("text",), label_column: str = "label",
                 label_names: Sequence[str] | None = None,
                 test_size: int | float | None = None) -> None:
        self.name, self.config_name = name, config_name
        self.train_split, self.test_split, self.val_split = train_split, test_split, val_split
        self.text_columns, self.label_column = column_list(text_columns), label_column
        self.label_names = list(label_names) if label_names else None
        self.test_size = optional_size("data.test_size", test_size)

    def setting(self) -> str:
        return f"data.name={self.name!r}" + (f" ({self.config_name})" if self.config_name else "")

    def signature(self) -> dict[str, Any]:
        signature = {"hub": self.name, "config": self.config_name, "train": self.train_split,
                     "test": self.test_split}
        return {**signature, "val": self.val_split} if self.val_split else signature

    def read(self) -> dict[str, Any]:
        hint = "Train on a local copy instead: data=files data.train_file=... (see README)."
        splits = load_from_hub(self.name, self.config_name, hint)
        wanted = {"train": self.train_split}
        if self.test_split is not None:
            wanted["test"] = self.test_split
        if self.val_split is not None:
            wanted["val"] = self.val_split
        for role, split in wanted.items():
            if split not in splits:
                raise DataError(f"{self.setting()} has no split {split!r} (data."
                                f"{role}_split); its splits: {sorted(splits)}")
        return {role: splits[split] for role, split in wanted.items()}
