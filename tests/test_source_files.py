"""Local files (data=files): CSV, TSV, JSON Lines and parquet, hold-outs, label checks, and
runs that train and predict from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gru_lightning.data import DataError, TextDataModule
from gru_lightning.data.files import FilesSource
from gru_lightning.predict import Predictor, main
from gru_lightning.train import train
from tests.conftest import (
    cache_entries,
    compose_train_config,
    synthetic_reviews,
)
from tests.source_data import (
    TOPICS,
    settings,
    topic_rows,
    write_table,
)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_each_file_format_one_file_per_split(tmp_path, suffix):
    rows = [{"title": t, "body": d, "topic": y} for t, d, y in topic_rows(240, 0)]
    tests = [{"title": t, "body": d, "topic": y} for t, d, y in topic_rows(60, 1)]
    dm = TextDataModule.from_settings(
        FilesSource, train_file=str(write_table(tmp_path / f"train{suffix}", rows)),
        test_file=str(write_table(tmp_path / f"test{suffix}", tests)),
        text_columns=["title", "body"], label_column="topic",
        **settings(tmp_path))
    dm.setup("fit")
    assert dm.class_names == ["money", "space", "sport"]  # string labels, sorted
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [210, 30, 60]
    # title and body joined: words of both columns are in the vocabulary
    vocab = dm.text_encoder.tokenizer.get_vocab()
    assert rows[0]["title"].split()[0].lower() in vocab and "rocket" in vocab


def test_a_single_file_holds_out_a_seeded_test_split(tmp_path):
    rows = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(300, 0)]
    path = write_table(tmp_path / "all.csv", rows)
    first = TextDataModule.from_settings(
        FilesSource, train_file=str(path), test_size=0.2, **settings(tmp_path))
    first.setup("fit")
    assert [len(first.splits[s]) for s in ("train", "val", "test")] == [210, 30, 60]
    again = TextDataModule.from_settings(FilesSource, train_file=str(path), test_size=0.2,
                                         **settings(tmp_path, cache_dir=str(tmp_path / "other")))
    again.setup("fit")
    assert (again.splits["test"].ids == first.splits["test"].ids).all()  # seeded
    assert sorted(first.split_texts()["test"]) != sorted(r["text"] for r in rows[-60:])


def test_test_size_as_a_count_holds_out_exactly_that_many(tmp_path):
    rows = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(300, 0)]
    path = write_table(tmp_path / "all.jsonl", rows)
    dm = TextDataModule.from_settings(
        FilesSource, train_file=str(path), test_size=45, **settings(tmp_path))
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [225, 30, 45]
    with pytest.raises(ValueError, match=r"data.test_size must be a count >= 1 or a fraction "
                                         r"in \(0, 1\), got 0"):
        TextDataModule.from_settings(
            FilesSource, train_file=str(path), test_size=0, **settings(tmp_path))


@pytest.mark.parametrize(("rows", "message"), [
    ([{"text": "a b", "label": None}, {"text": "c d", "label": 1}],
     "column 'label', train split: no label in row(s) 240"),
    ("single", "column 'label', train split: every label is 'sport'; a classifier needs at "
               "least two classes"),
    ("unseen", "column 'label', test split: label(s) never seen in training: 'weather' in "
               "row(s) 0"),
    ("mixed", "labels must be all integers or all strings"),
    ("no_column", "train split: no column(s) ['label']"),
])
def test_label_errors_name_the_column_value_and_row(tmp_path, rows, message):
    base = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(240, 0)]
    test = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(30, 1)]
    if rows == "single":
        base = [{**r, "label": "sport"} for r in base]
    elif rows == "unseen":
        test[0]["label"] = "weather"
    elif rows == "mixed":
        base[5]["label"] = 3
    elif rows == "no_column":
        base = [{"text": r["text"], "topic": r["label"]} for r in base]
        test = [{"text": r["text"], "topic": r["label"]} for r in test]
    else:
        base += rows
    suffix = ".jsonl"  # keeps mixed types and nulls as they are
    dm = TextDataModule.from_settings(
        FilesSource, train_file=str(write_table(tmp_path / f"train{suffix}", base)),
        test_file=str(write_table(tmp_path / f"test{suffix}", test)),
        **settings(tmp_path))
    with pytest.raises(DataError) as error:
        dm.prepare_data()
    assert "data.train_file=" in str(error.value) and message in str(error.value)
    assert not cache_entries(tmp_path / "c")  # nothing tokenized


def test_string_labels_train_and_predict_with_settings_only(tmp_path):
    """A CSV with "positive"/"negative" labels: no code, only settings."""
    rows = [{"review": t, "sentiment": "positive" if y else "negative"}
            for t, y in synthetic_reviews(1000, seed=0)]
    csv = write_table(tmp_path / "reviews.csv", rows)
    cfg = compose_train_config(tmp_path, None, "data=files", f"data.train_file={csv}",
                               "data.text_columns=[review]", "data.label_column=sentiment",
                               "trainer.max_epochs=2")
    metrics = train(cfg)
    assert metrics["classes"] == ["negative", "positive"] and metrics["test/acc"] >= 0.9
    assert metrics["params"] == 100 * 16 + 3 * (16 * 16 + 16 * 16 + 2 * 16) + 16 + 1  # one logit
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    classifier = Predictor.from_checkpoint(checkpoint, device="cpu")
    new_reviews = synthetic_reviews(40, seed=3)
    predicted = classifier.predict([t for t, _ in new_reviews])
    expected = ["positive" if y else "negative" for _, y in new_reviews]
    assert sum(p.label == e for p, e in zip(predicted, expected, strict=True)) >= 36


def test_multi_class_end_to_end_train_checkpoint_predict(tmp_path, capsys):
    rows = [{"title": t, "description": d, "label": 1 + list(TOPICS).index(y)}
            for t, d, y in topic_rows(900, 0)]
    csv = write_table(tmp_path / "topics.csv", rows)
    cfg = compose_train_config(tmp_path, None, "data=files", f"data.train_file={csv}",
                               "data.text_columns=[title,description]",
                               "data.label_names=[Sport,Money,Space]", "trainer.max_epochs=4")
    metrics = train(cfg)
    assert metrics["classes"] == ["Sport", "Money", "Space"]  # labels 1-3, named in order
    # Macro F1 and AUROC over three classes, beside the accuracy (metrics.METRICS).
    assert metrics["test/acc"] >= 0.9 and metrics["test/f1"] >= 0.9
    assert metrics["test/auroc"] >= 0.97
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"

    capsys.readouterr()
    assert main([str(checkpoint), "--jsonl", "--all-scores", "rocket orbit nasa launch",
                 "market stocks bank profit"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in records] == ["Space", "Money"]
    assert set(records[0]["scores"]) == {"Sport", "Money", "Space"}
    assert abs(sum(records[0]["scores"].values()) - 1) < 1e-5
    assert records[0]["score"] == max(records[0]["scores"].values())
    assert main([str(checkpoint), "--jsonl", "--top-k", "2", "rocket orbit nasa launch"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["scores"]) == 2 and next(iter(record["scores"])) == "Space"
    assert main([str(checkpoint), "league goal coach match"]) == 0
    table = capsys.readouterr().out
    assert "Sport" in table.splitlines()[1] and "P(label)" in table.splitlines()[0]


def test_a_validation_file_is_used_instead_of_a_hold_out(tmp_path, caplog):
    rows = [{"text": f"{t} {d}", "label": y} for t, d, y in topic_rows(300, 0)]
    files = {split: write_table(tmp_path / f"{split}.csv", part) for split, part in
             (("train", rows[:200]), ("val", rows[200:250]), ("test", rows[250:]))}
    dm = TextDataModule.from_settings(
        FilesSource, train_file=str(files["train"]), val_file=str(files["val"]),
        test_file=str(files["test"]), **settings(tmp_path))
    with caplog.at_level("INFO"):
        dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [200, 50, 50]
    # The file's, in order.
    assert list(dm.split_texts()["val"]) == [r["text"] for r in rows[200:250]]
    assert "data.val_size is not used" in caplog.text
