"""Inference from a checkpoint (the run trained once for all tests): the Python API, the
command line (`main()` in-process; a subprocess where the process is the point), export,
bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gru_lightning.predict import CheckpointError, Predictor, main
from gru_lightning.textfiles import read_texts
from tests.conftest import ROOT, synthetic_reviews


@pytest.fixture(scope="module")
def predictor(trained) -> Predictor:
    return Predictor.from_checkpoint(trained.last, device="cpu")


def label_of(y: int) -> str:
    return "pos" if y else "neg"


def accuracy(predictions, reviews) -> float:
    return sum(p.label == label_of(y) for p, (_, y) in zip(predictions, reviews, strict=True)
               ) / len(reviews)


def test_python_api_classifies_new_reviews(predictor):
    reviews = synthetic_reviews(100, seed=123)  # unseen, same distribution
    predictions = predictor.predict([t for t, _ in reviews], batch_size=16)
    assert accuracy(predictions, reviews) >= 0.95
    assert all(p.error is None and p.warning is None for p in predictions)


def test_score_is_the_probability_of_the_label_and_scores_come_on_request(predictor):
    """`score` is P(label), as pipeline("text-classification") gives it; two classes: the
    label is the second class exactly where P(second) >= 0.5 (predict_proba's column)."""
    assert predictor.class_names == ["neg", "pos"]
    texts = ["great wonderful superb film", "awful boring terrible film"]
    positive, negative = predictor.predict(texts)
    assert positive.label == "pos" and positive.score > 0.9
    assert negative.label == "neg" and negative.score > 0.9  # P(neg), not P(pos)
    assert positive.scores is None
    p_pos = predictor.predict_proba(texts)
    torch.testing.assert_close(p_pos, torch.tensor([positive.score, 1 - negative.score]))
    every = predictor.predict(texts, all_scores=True)
    assert list(every[1].scores) == ["neg", "pos"]  # best first
    assert sum(every[1].scores.values()) == pytest.approx(1.0)
    assert list(predictor.predict(texts, top_k=1)[0].scores) == ["pos"]
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        predictor.predict(texts, top_k=0)


def test_preprocessing_comes_from_the_checkpoint_alone(predictor, trained, tmp_path):
    # The checkpoint's encoder is the one training used: same maxlen, same padding side.
    assert predictor.encoder.maxlen == 24 and predictor.encoder.padding == "pre"
    moved = tmp_path / "elsewhere.ckpt"
    moved.write_bytes(trained.last.read_bytes())  # no dataset, no cache, no config beside it
    again = Predictor.from_checkpoint(moved, device="cpu")
    texts = [t for t, _ in synthetic_reviews(10, seed=5)]
    assert torch.equal(again.predict_proba(texts), predictor.predict_proba(texts))


def test_trainer_predict_uses_predict_step(predictor, trained):
    import lightning as L

    from gru_lightning.model import TextClassifier

    model = TextClassifier.from_checkpoint(str(trained.last))
    texts = [t for t, _ in synthetic_reviews(8, seed=6)]
    loader = torch.utils.data.DataLoader(predictor.encoder.encode(texts), batch_size=4)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    batches = trainer.predict(model, dataloaders=loader)
    torch.testing.assert_close(torch.cat(batches), predictor.predict_proba(texts))


def test_bad_texts_get_messages_and_the_others_keep_their_results(predictor):
    good = [t for t, _ in synthetic_reviews(4, seed=7)]
    huge = "great " * 200_000  # ~1.2 MB
    texts = [good[0], "", "   \n", "qwzx plonk vrrbt", good[1], huge, good[2], 42]
    predictions = predictor.predict(texts)
    assert [p.error for p in predictions[1:3]] == ["empty text", "empty text"]
    assert predictions[7].error == "not text: int" and predictions[7].label is None
    assert "no word of this text is in the model's vocabulary" in predictions[3].warning
    assert predictions[3].label in ("pos", "neg")
    assert predictions[5].label == "pos" and predictions[5].error is None
    alone = predictor.predict([good[0], good[1], good[2]])
    assert [p.score for p in alone] == pytest.approx(
        [predictions[i].score for i in (0, 4, 6)], abs=1e-6)


def test_batch_size_and_device_leave_the_results_unchanged(predictor, trained):
    texts = [t for t, _ in synthetic_reviews(37, seed=10)]
    reference = predictor.predict_proba(texts, batch_size=1024)
    for batch_size in (1, 5, 64):
        torch.testing.assert_close(predictor.predict_proba(texts, batch_size=batch_size),
                                   reference, atol=1e-6, rtol=1e-5)
    on_cpu = Predictor.from_checkpoint(trained.last, device="cpu")
    torch.testing.assert_close(on_cpu.predict_proba(texts), reference)
    if torch.cuda.is_available():
        on_gpu = Predictor.from_checkpoint(trained.last, device="cuda")
        torch.testing.assert_close(on_gpu.predict_proba(texts), reference, atol=1e-4, rtol=1e-3)


def test_export_matches_the_checkpoint(predictor, trained, tmp_path, capsys):
    """`--export DIR` writes model.pt2 and text_encoder.json that give the same
    probabilities as the checkpoint."""
    assert main([str(trained.last), "--export", str(tmp_path / "export")]) == 0
    assert f"exported to {tmp_path / 'export' / 'model.pt2'}" in capsys.readouterr().out
    program = torch.export.load(tmp_path / "export" / "model.pt2").module()
    saved = json.loads((tmp_path / "export" / "text_encoder.json").read_text())
    from gru_lightning.preprocessing import TextEncoder

    encoder = TextEncoder.from_dict(saved)
    texts = [t for t, _ in synthetic_reviews(33, seed=8)]  # a batch size not seen in export
    with torch.no_grad():
        exported = torch.sigmoid(program(encoder.encode(texts)))
    torch.testing.assert_close(exported, predictor.predict_proba(texts), atol=1e-6, rtol=1e-5)


def test_command_line_texts_files_and_stdin(trained, tmp_path, capsys, monkeypatch):
    reviews = synthetic_reviews(6, seed=9)
    lines = tmp_path / "reviews.txt"
    lines.write_text("\n".join(t for t, _ in reviews[:2]) + "\n", encoding="utf-8")
    table = tmp_path / "reviews.csv"
    table.write_text("id,review\n1,\"" + reviews[2][0] + "\"\n", encoding="utf-8")
    records = tmp_path / "reviews.jsonl"
    records.write_text(json.dumps({"text": reviews[3][0]}) + "\n", encoding="utf-8")
    assert main([str(trained.last), reviews[4][0], "--file", str(lines), "--file",
                 str(records), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [reviews[i][0] for i in (4, 0, 1, 3)]
    assert [r["label"] for r in rows] == [label_of(reviews[i][1]) for i in (4, 0, 1, 3)]

    assert main([str(trained.last), "--file", str(table), "--text-column", "review"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["#", "label", "P(label)", "text"]  # the table
    assert out[1].split()[1] == label_of(reviews[2][1])

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(reviews[5][0].encode())))
    assert main([str(trained.last), "--file", "-", "--jsonl"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == label_of(reviews[5][1])


def test_non_utf8_file_is_decoded_with_replacement_and_said(tmp_path, trained, capsys):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"great wonderful superb\n" + "caf\xe9 awful boring\n".encode("latin-1"))
    texts, notes = read_texts(str(path))
    assert texts[1] == "caf\ufffd awful boring" and "line(s) 2 are not valid UTF-8" in notes[0]
    assert main([str(trained.last), "--file", str(path), "--jsonl"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["label"] for line in captured.out.splitlines()] == ["pos", "neg"]
    assert "not valid UTF-8" in captured.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp, ckpt: tmp / "missing.ckpt", "does not exist"),
        (lambda tmp, ckpt: _write(tmp / "corrupt.ckpt", b"not a checkpoint at all"),
         "is not a readable checkpoint"),
        (lambda tmp, ckpt: _truncated(tmp, ckpt), "is not a readable checkpoint"),
        (lambda tmp, ckpt: _edited(tmp, ckpt, lambda c: c.update(text_encoder=None)),
         "holds no preprocessing"),
        (lambda tmp, ckpt: _edited(tmp, ckpt,
                                   lambda c: c["text_encoder"].update(format_version=99)),
         "text encoder format 99"),
        (lambda tmp, ckpt: _edited(tmp, ckpt,
                                   lambda c: c["network"]["settings"].update(hidden_size=7)),
         "incompatible with this version"),
    ],
)
def test_bad_checkpoints_are_clear_errors(tmp_path, trained, make, message, capsys):
    path = make(tmp_path, trained.last)
    with pytest.raises((FileNotFoundError, CheckpointError), match=message):
        Predictor.from_checkpoint(path)
    assert main([str(path), "a review"]) == 1
    assert message in capsys.readouterr().err


def test_missing_text_file_and_no_input(trained, capsys):
    assert main([str(trained.last), "--file", "/no/such/file.txt"]) == 1
    assert "text file '/no/such/file.txt' does not exist" in capsys.readouterr().err
    assert main([str(trained.last)]) == 1
    assert "no texts given" in capsys.readouterr().err


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


def test_texts_may_follow_options(trained, capsys):
    assert main([str(trained.last), "--batch-size", "8", "--jsonl", "great superb film",
                 "awful dull film"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["text"], r["label"]) for r in rows] == [("great superb film", "pos"),
                                                       ("awful dull film", "neg")]


def test_one_text_per_line_means_newlines_only(tmp_path, trained, capsys):
    """Texts hold NEL (U+0085), U+2028 and form feeds, at which str.splitlines() would also
    split: one output per input line, in order."""
    reviews = ["great film\x85loved it", "awful\u2028dull", "superb\x0cmoving", "boring",
               "worst film"]
    file = tmp_path / "reviews.txt"
    file.write_bytes("\r\n".join(reviews[:2]).encode() + b"\n"
                     + "\n".join(reviews[2:]).encode() + b"\n")
    assert read_texts(str(file))[0] == reviews
    assert main([str(trained.last), "--file", str(file), "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.split("\n") if line]
    assert [r["text"] for r in rows] == reviews


def test_the_command_starts_without_lightning(trained):
    """The command loads the network alone: it never imports Lightning or torchmetrics,
    which take seconds to start. A real process, as a user starts it."""
    code = ("import sys, runpy\n"
            "sys.argv = ['predict', sys.argv[1], 'great wonderful superb film']\n"
            "try:\n    runpy.run_module('gru_lightning.predict', run_name='__main__')\n"
            "except SystemExit as stop:\n    assert stop.code == 0, stop.code\n"
            "print(sorted(m for m in ('lightning', 'torchmetrics') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(trained.last)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert " pos " in result.stdout
