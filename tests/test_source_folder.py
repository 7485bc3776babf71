"""A folder per class of .txt files (data=folder)."""

from __future__ import annotations

from gru_lightning.data import TextDataModule
from gru_lightning.data.folder import FolderSource
from tests.source_data import (
    settings,
    topic_rows,
)


def test_a_folder_per_class(tmp_path):
    for split, (n, seed) in {"train": (240, 0), "test": (60, 1)}.items():
        for i, (title, body, topic) in enumerate(topic_rows(n, seed)):
            folder = tmp_path / split / topic
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.txt").write_text(f"{title}\n{body}")
    dm = TextDataModule.from_settings(
        FolderSource, train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test"),
        **settings(tmp_path))
    dm.setup("fit")
    assert dm.class_names == ["money", "space", "sport"]
    assert len(dm.splits["test"]) == 60 and dm.splits["test"].labels.dtype.is_floating_point \
        is False
