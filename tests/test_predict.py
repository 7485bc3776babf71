"""Inference from a checkpoint: Python API, command line, export, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gru_lightning.predict import CheckpointError, SentimentClassifier, main, read_reviews
from gru_lightning.train import train
from tests.conftest import compose_train_config, synthetic_reviews

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, parquet_copy) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_train_config(tmp, parquet_copy, "trainer.max_epochs=5")
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.9
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def classifier(checkpoint) -> SentimentClassifier:
    return SentimentClassifier.from_checkpoint(checkpoint, device="cpu")


def accuracy(predictions, reviews) -> float:
    return sum(p.label == ("pos" if y else "neg") for p, (_, y) in zip(predictions, reviews,
                                                                      strict=True)) / len(reviews)


def test_python_api_classifies_new_reviews(classifier):
    reviews = synthetic_reviews(100, seed=123)
    predictions = classifier.predict([t for t, _ in reviews], batch_size=16)
    assert accuracy(predictions, reviews) >= 0.9
    assert all(0 <= p.probability <= 1 and p.error is None for p in predictions)


def test_preprocessing_comes_from_the_checkpoint_alone(classifier, checkpoint, tmp_path):
    # The checkpoint's encoder is the one training used: same maxlen, same padding side.
    assert classifier.encoder.maxlen == 24 and classifier.encoder.padding == "pre"
    moved = tmp_path / "elsewhere.ckpt"
    moved.write_bytes(checkpoint.read_bytes())  # no dataset, no cache, no config beside it
    again = SentimentClassifier.from_checkpoint(moved, device="cpu")
    texts = [t for t, _ in synthetic_reviews(10, seed=5)]
    torch.testing.assert_close(again.predict_proba(texts), classifier.predict_proba(texts))


def test_trainer_predict_uses_predict_step(classifier, checkpoint):
    import lightning as L

    from gru_lightning.model import SentimentRNN

    model = SentimentRNN.load_from_checkpoint(checkpoint, map_location="cpu")
    ids = classifier.encoder.encode([t for t, _ in synthetic_reviews(8, seed=6)])
    loader = torch.utils.data.DataLoader(ids, batch_size=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    batches = trainer.predict(model, dataloaders=loader)
    torch.testing.assert_close(torch.cat(batches), classifier.predict_proba(
        [t for t, _ in synthetic_reviews(8, seed=6)]))


def test_bad_reviews_get_messages_and_the_others_keep_their_results(classifier):
    good = [t for t, _ in synthetic_reviews(4, seed=7)]
    huge = "great " * 200_000  # ~1.2 MB
    texts = [good[0], "", "   \n", "qwzx plonk vrrbt", good[1], huge, good[2]]
    predictions = classifier.predict(texts)
    assert [p.error for p in predictions[1:3]] == ["empty review", "empty review"]
    assert "no word of this review is in the model's vocabulary" in predictions[3].warning
    assert predictions[3].label in ("pos", "neg")
    assert predictions[5].label == "pos" and predictions[5].error is None
    alone = classifier.predict([good[0], good[1], good[2]])
    assert [p.probability for p in alone] == pytest.approx(
        [predictions[i].probability for i in (0, 4, 6)], abs=1e-6)


def test_export_matches_the_checkpoint(classifier, tmp_path):
    path = classifier.export(tmp_path / "export")
    program = torch.export.load(path).module()
    saved = json.loads((tmp_path / "export" / "text_encoder.json").read_text())
    from gru_lightning.preprocessing import TextEncoder

    encoder = TextEncoder.from_dict(saved)
    texts = [t for t, _ in synthetic_reviews(33, seed=8)]  # a batch size not seen in export
    with torch.no_grad():
        exported = torch.sigmoid(program(encoder.encode(texts)))
    torch.testing.assert_close(exported, classifier.predict_proba(texts), atol=1e-6, rtol=1e-5)


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gru_lightning.predict", *args], cwd=ROOT,
                          input=stdin, capture_output=True, timeout=120)


def test_command_line_texts_files_and_stdin(checkpoint, tmp_path):
    reviews = synthetic_reviews(6, seed=9)
    lines = tmp_path / "reviews.txt"
    lines.write_text("\n".join(t for t, _ in reviews[:2]) + "\n", encoding="utf-8")
    table = tmp_path / "reviews.csv"
    table.write_text("id,review\n1,\"" + reviews[2][0] + "\"\n", encoding="utf-8")
    records = tmp_path / "reviews.jsonl"
    records.write_text(json.dumps({"text": reviews[3][0]}) + "\n", encoding="utf-8")
    result = run_cli(str(checkpoint), reviews[4][0], "--file", str(lines), "--file",
                     str(records), "--jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(rows) == 4 and all(r["label"] in ("pos", "neg") for r in rows)
    assert rows[0]["text"] == reviews[4][0]

    result = run_cli(str(checkpoint), "--file", str(table), "--text-column", "review")
    assert result.returncode == 0, result.stderr
    assert "P(pos)" in result.stdout.decode()  # the table

    result = run_cli(str(checkpoint), "--file", "-", "--jsonl", stdin=reviews[5][0].encode())
    assert json.loads(result.stdout)["label"] == ("pos" if reviews[5][1] else "neg")


def test_non_utf8_file_is_decoded_with_replacement_and_said(tmp_path, checkpoint):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"great wonderful superb\n" + "caf\xe9 awful boring\n".encode(
        "latin-1"))
    texts, notes = read_reviews(str(path))
    assert texts[1] == "caf\ufffd awful boring" and "line(s) 2 are not valid UTF-8" in notes[0]
    result = run_cli(str(checkpoint), "--file", str(path), "--jsonl")
    assert result.returncode == 0
    assert len(result.stdout.decode().splitlines()) == 2
    assert b"not valid UTF-8" in result.stderr


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, ckpt: tmp / "missing.ckpt", "does not exist"),
        (lambda tmp, ckpt: _write(tmp / "corrupt.ckpt", b"not a checkpoint at all"),
         "is not a readable checkpoint"),
        (lambda tmp, ckpt: _truncated(tmp, ckpt), "is not a readable checkpoint"),
        (lambda tmp, ckpt: _edited(tmp, ckpt, lambda c: c.pop("text_encoder")),
         "holds no preprocessing"),
        (lambda tmp, ckpt: _edited(tmp, ckpt,
                                   lambda c: c["text_encoder"].update(format_version=99)),
         "text encoder format 99"),
        (lambda tmp, ckpt: _edited(tmp, ckpt,
                                   lambda c: c["hyper_parameters"].update(hidden_size=7)),
         "incompatible with this version"),
    ],
)
def test_bad_checkpoints_are_clear_errors(tmp_path, checkpoint, make, message, capsys):
    path = make(tmp_path, checkpoint)
    with pytest.raises((FileNotFoundError, CheckpointError), match=message):
        SentimentClassifier.from_checkpoint(path)
    assert main([str(path), "a review"]) == 1
    assert message in capsys.readouterr().err


def test_missing_review_file_and_no_input(checkpoint, capsys):
    assert main([str(checkpoint), "--file", "/no/such/file.txt"]) == 1
    assert "review file '/no/such/file.txt' does not exist" in capsys.readouterr().err
    assert main([str(checkpoint)]) == 1
    assert "no reviews given" in capsys.readouterr().err


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncated(tmp: Path, checkpoint: Path) -> Path:
    return _write(tmp / "truncated.ckpt", checkpoint.read_bytes()[:5000])


def _edited(tmp: Path, checkpoint: Path, edit) -> Path:
    state = torch.load(checkpoint, weights_only=True)
    edit(state)
    path = tmp / "edited.ckpt"
    torch.save(state, path)
    return path


def test_reviews_may_follow_options(checkpoint):
    result = run_cli(str(checkpoint), "--batch-size", "8", "--jsonl", "great superb film",
                     "awful dull film")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [r["text"] for r in rows] == ["great superb film", "awful dull film"]


def test_one_review_per_line_means_newlines_only(tmp_path, checkpoint):
    """Reviews hold NEL (U+0085), U+2028 and form feeds, at which str.splitlines() would also
    split: one output per input line, in order."""
    reviews = ["great film\x85loved it", "awful\u2028dull", "superb\x0cmoving", "boring",
               "worst film"]
    file = tmp_path / "reviews.txt"
    file.write_bytes("\r\n".join(reviews[:2]).encode() + b"\n"
                     + "\n".join(reviews[2:]).encode() + b"\n")
    assert read_reviews(str(file))[0] == reviews
    result = run_cli(str(checkpoint), "--file", str(file), "--jsonl")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.decode().split("\n") if line]
    assert [r["text"] for r in rows] == reviews


def test_prediction_starts_without_lightning():
    """The command and the Python API load the network alone (network.TextRNN): importing
    them does not import Lightning or torchmetrics, which take seconds to start."""
    code = ("import sys, gru_lightning.predict; "
            "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
