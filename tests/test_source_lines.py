"""Texts and labels line by line with a mapping (data=lines, TweetEval's layout), and its
bad files."""

from __future__ import annotations

import pytest

from gru_lightning.data import DataError, DatasetUnavailableError, TextDataModule
from tests.conftest import (
    cache_entries,
)
from tests.source_data import (
    TOPICS,
    lines_file,
    settings,
    topic_rows,
    tweeteval_folder,
)


def test_texts_and_labels_line_by_line_with_a_mapping(tmp_path):
    from gru_lightning.data.lines import LinesSource

    folder = tweeteval_folder(tmp_path / "emotion")
    dm = TextDataModule.from_settings(LinesSource, dir=str(folder), **settings(tmp_path))
    dm.setup("fit")
    assert dm.class_names == ["sport", "money", "space"]  # the mapping's names, in its order
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [240, 30, 60]
    first = topic_rows(240, 0)[0]
    assert dm.split_texts()["train"][0] == f"{first[0]} {first[1]}"
    assert dm.splits["train"].labels[0].item() == list(TOPICS).index(first[2])
    # The same through settings alone, file by file, labels as their own values.
    files = TextDataModule.from_settings(
        LinesSource, train_texts=str(folder / "train_text.txt"),
        train_labels=str(folder / "train_labels.txt"), test_texts=str(folder / "test_text.txt"),
        test_labels=str(folder / "test_labels.txt"), label_names=["Sport", "Money", "Space"],
        **settings(tmp_path / "files"))
    files.setup("fit")
    assert files.class_names == ["Sport", "Money", "Space"]
    assert [len(files.splits[s]) for s in ("train", "val", "test")] == [210, 30, 60]


@pytest.mark.parametrize(("damage", "message"), [
    ("short_labels", "train_labels.txt' has 239 lines, but '{folder}/train_text.txt' has 240: "
                     "one label per text"),
    ("unknown_label", "{folder}/val_labels.txt:3: label '7' is not in {folder}/mapping.txt "
                      "(its labels: ['0', '1', '2']); 1 line(s) in all"),
    ("bad_mapping", "{folder}/mapping.txt:2: expected <label><TAB><name>, got '1 money'"),
])
def test_bad_line_files_are_one_clear_error_naming_the_file_and_line(tmp_path, damage,
                                                                     message):
    from gru_lightning.data.lines import LinesSource

    folder = tweeteval_folder(tmp_path / "task")
    if damage == "short_labels":
        lines = (folder / "train_labels.txt").read_text().splitlines()
        lines_file(folder / "train_labels.txt", lines[:-1])
    elif damage == "unknown_label":
        lines = (folder / "val_labels.txt").read_text().splitlines()
        lines_file(folder / "val_labels.txt", [*lines[:2], "7", *lines[3:]])
    else:
        (folder / "mapping.txt").write_text("0\tsport\n1 money\n2\tspace\n")
    dm = TextDataModule.from_settings(LinesSource, dir=str(folder), **settings(tmp_path))
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    assert message.format(folder=folder) in str(error.value)
    assert not cache_entries(tmp_path / "c")  # nothing tokenized


def test_line_files_settings_are_checked(tmp_path):
    from gru_lightning.data.lines import LinesSource

    with pytest.raises(ValueError, match=r"data\.val_texts and data\.val_labels go together"):
        LinesSource(val_texts="v.txt")
    with pytest.raises(DatasetUnavailableError, match=r"holds no train_text\.txt"):
        TextDataModule.from_settings(
            LinesSource, dir=str(tmp_path), **settings(tmp_path)).prepare_data()
    with pytest.raises(DatasetUnavailableError, match=r"needs data\.dir=FOLDER"):
        TextDataModule.from_settings(LinesSource, **settings(tmp_path)).prepare_data()
