"""A Hugging Face data set by name (data=hub), and an unreachable Hub."""

from __future__ import annotations

import pytest

from gru_lightning.data import DataError, DatasetUnavailableError, TextDataModule
from gru_lightning.data.hub import HubSource
from tests.source_data import (
    settings,
    topic_rows,
)


def test_a_hub_data_set_by_name_with_its_class_names(tmp_path, monkeypatch):
    """A Hub data set (here a local folder, which load_dataset reads the same way offline):
    ClassLabel names are used; the split names and columns are settings."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["money", "space",
                                                                      "sport"])})
    names = ["money", "space", "sport"]
    for split, (n, seed) in {"train": (240, 0), "validation": (60, 1)}.items():
        rows = topic_rows(n, seed)
        data = datasets.Dataset.from_dict(
            {"sentence": [f"{t} {d}" for t, d, _ in rows],
             "label": [names.index(y) for _, _, y in rows]}, features=features)
        (tmp_path / "hub" / "data").mkdir(parents=True, exist_ok=True)
        data.to_parquet(str(tmp_path / "hub" / "data" / f"{split}.parquet"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dm = TextDataModule.from_settings(
        HubSource, name=str(tmp_path / "hub"), test_split="validation",
        text_columns=["sentence"], **settings(tmp_path))
    dm.setup("fit")
    assert dm.class_names == names and len(dm.splits["test"]) == 60
    # Its own validation split instead of a hold-out (here the same split as the test's).
    validated = TextDataModule.from_settings(
        HubSource, name=str(tmp_path / "hub"), test_split="validation",
        val_split="validation", text_columns=["sentence"],
        **settings(tmp_path, cache_dir=str(tmp_path / "v")))
    validated.setup("fit")
    assert [len(validated.splits[s]) for s in ("train", "val", "test")] == [240, 60, 60]
    wrong = TextDataModule.from_settings(HubSource, name=str(tmp_path / "hub"), test_split="test",
                                         **settings(tmp_path))
    with pytest.raises(DataError, match=r"has no split 'test' \(data.test_split\); its splits: "
                                        r"\['train', 'validation'\]"):
        wrong.prepare_data()


def test_an_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(DatasetUnavailableError, match=r"(?s)Hub is unreachable.*data=files"):
        TextDataModule.from_settings(HubSource, name="ag_news", **settings(tmp_path)).prepare_data()
