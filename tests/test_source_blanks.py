"""Blank texts, left out alike by every source."""

from __future__ import annotations

from pathlib import Path

import pytest

from gru_lightning.data import TextDataModule
from gru_lightning.data.files import FilesSource
from gru_lightning.data.folder import FolderSource
from tests.conftest import (
    synthetic_reviews,
    write_parquet_copy,
)
from tests.source_data import (
    settings,
    write_table,
)

BLANKS = [None, "", "  \n\t "]


def _blank_rows(tmp_path: Path, kind: str) -> TextDataModule:
    """The same training texts with three blank ones (rows 240, 242, 244) through `kind`."""
    rows = [*synthetic_reviews(240, seed=0), (BLANKS[0], 1), ("a fine film", 1), (BLANKS[1], 0),
            ("dull", 0), (BLANKS[2], 1)]
    test = synthetic_reviews(40, seed=1)
    if kind == "imdb":
        from gru_lightning.data.imdb import IMDBSource

        local = write_parquet_copy(tmp_path / "imdb", {"train": rows, "test": test})
        return TextDataModule.from_settings(IMDBSource, local_path=str(local),
                                            **settings(tmp_path))
    if kind in (".jsonl", ".parquet"):
        files = {split: write_table(tmp_path / f"{split}{kind}",
                                    [{"text": t, "label": y} for t, y in data])
                 for split, data in (("train", rows), ("test", test))}
        return TextDataModule.from_settings(FilesSource, train_file=str(files["train"]),
                                            test_file=str(files["test"]), **settings(tmp_path))
    for split, data in (("train", rows), ("test", test)):  # a folder per class
        for i, (text, label) in enumerate(data):
            folder = tmp_path / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:04d}.txt").write_text(text or "")
    return TextDataModule.from_settings(FolderSource, train_dir=str(tmp_path / "train"),
                                        test_dir=str(tmp_path / "test"), **settings(tmp_path))


@pytest.mark.parametrize("kind", ["imdb", ".jsonl", ".parquet", "folder"])
def test_blank_texts_are_left_out_alike_in_every_source(tmp_path, caplog, kind):
    dm = _blank_rows(tmp_path, kind)
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 242  # 245 less the 3 blanks
    assert "train split: 3 text(s) with nothing in them (null or blank) left out" in caplog.text
    texts = dm.split_texts()
    assert all(t and t.strip() for t in [*texts["train"], *texts["val"]])
