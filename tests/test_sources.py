"""Your own data: every source kind, string and multi-class labels end to end (train,
checkpoint, predict), and each label and text error as one clear message."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gru_lightning.data import DataError, DatasetUnavailableError, TextDataModule
from gru_lightning.data.files import FilesSource
from gru_lightning.data.folder import FolderSource
from gru_lightning.data.hub import HubSource
from gru_lightning.predict import Predictor, main
from gru_lightning.train import train
from tests.conftest import (
    FILLER,
    cache_entries,
    compose_train_config,
    synthetic_reviews,
    write_parquet_copy,
)

TOPICS = {"sport": ["match", "goal", "league", "coach"],
          "money": ["market", "stocks", "bank", "profit"],
          "space": ["rocket", "orbit", "nasa", "launch"]}


def topic_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(title, description, topic): the topic's words in either column, among filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % 3]
        words = rng.choices(FILLER, k=rng.randint(6, 14)) + rng.choices(TOPICS[topic], k=2)
        rng.shuffle(words)
        rows.append((" ".join(words[:4]).title(), " ".join(words[4:]) + ".", topic))
    return rows


def write_table(path: Path, rows: list[dict]) -> Path:
    """rows as CSV, TSV, JSON Lines or parquet, by the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    if path.suffix == ".parquet":
        pq.write_table(pa.table({c: [r[c] for r in rows] for c in columns}), path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import csv

        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, columns, delimiter="\t" if path.suffix == ".tsv"
                                    else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def settings(tmp_path: Path, **kwargs) -> dict:
    return {"max_features": 100, "maxlen": 16, "val_size": 30, "cache_dir": str(tmp_path / "c"),
            **kwargs}


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


BLANKS = [None, "", "  \n\t "]


def _blank_rows(tmp_path: Path, kind: str) -> TextDataModule:
    """The same training texts with three blank ones (rows 240, 242, 244) through `kind`."""
    rows = [*synthetic_reviews(240, seed=0), (BLANKS[0], 1), ("a fine film", 1), (BLANKS[1], 0),
            ("dull", 0), (BLANKS[2], 1)]
    test = synthetic_reviews(40, seed=1)
    if kind == "imdb":
        from gru_lightning.data.imdb import IMDBSource

        return TextDataModule.from_settings(IMDBSource, local_path=str(write_parquet_copy(
            tmp_path / "imdb", {"train": rows, "test": test})), **settings(tmp_path))
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


def _lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _tweeteval_folder(root: Path) -> Path:
    """TweetEval's layout: {split}_text.txt, {split}_labels.txt, mapping.txt."""
    names = list(TOPICS)
    for split, (n, seed) in {"train": (240, 0), "val": (30, 1), "test": (60, 2)}.items():
        rows = topic_rows(n, seed)
        _lines(root / f"{split}_text.txt", [f"{t} {d}" for t, d, _ in rows])
        _lines(root / f"{split}_labels.txt", [str(names.index(y)) for _, _, y in rows])
    (root / "mapping.txt").write_text("0\tsport\n1\tmoney\n2\tspace")  # no final newline
    return root


def test_texts_and_labels_line_by_line_with_a_mapping(tmp_path):
    from gru_lightning.data.lines import LinesSource

    folder = _tweeteval_folder(tmp_path / "emotion")
    dm = TextDataModule.from_settings(LinesSource, dir=str(folder), **settings(tmp_path))
    dm.setup("fit")
    assert dm.class_names == ["sport", "money", "space"]  # the mapping's names, in its order
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [240, 30, 60]
    first = topic_rows(240, 0)[0]
    assert dm.split_texts()["train"][0] == f"{first[0]} {first[1]}"
    assert dm.splits["train"].labels[0].item() == list(TOPICS).index(first[2])
    # The same through settings alone, file by file, labels as their own values.
    files = TextDataModule.from_settings(LinesSource,
        train_texts=str(folder / "train_text.txt"), train_labels=str(folder / "train_labels.txt"),
        test_texts=str(folder / "test_text.txt"), test_labels=str(folder / "test_labels.txt"),
        label_names=["Sport", "Money", "Space"], **settings(tmp_path / "files"))
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

    folder = _tweeteval_folder(tmp_path / "task")
    if damage == "short_labels":
        lines = (folder / "train_labels.txt").read_text().splitlines()
        _lines(folder / "train_labels.txt", lines[:-1])
    elif damage == "unknown_label":
        lines = (folder / "val_labels.txt").read_text().splitlines()
        _lines(folder / "val_labels.txt", [*lines[:2], "7", *lines[3:]])
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
