"""Checkpoints: what they hold, read without running pickled code, and release 0.1.0's
(tests/fixtures/README.md) read, predicted from and resumed as this release's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import gru_lightning
from gru_lightning import checkpoints
from gru_lightning.checkpoints import CheckpointError
from gru_lightning.model import TextClassifier
from gru_lightning.predict import Predictor
from gru_lightning.train import train

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OLD = FIXTURES / "release-0.1.0-nbsvm.pt"
OLD_PREDICTIONS = json.loads((FIXTURES / "release-0.1.0-nbsvm.json").read_text())
# The settings release 0.1.0 trained the fixture with.
OLD_SETTINGS = ["data.max_features=60", "model.net.embedding_dim=8", "model.net.hidden_size=8",
                "ngram=nbsvm", "ngram.model.buckets_log2=10", "ngram.model.max_vocab=200"]


def test_this_release_writes_its_format_and_the_network_settings(trained):
    state = checkpoints.read(trained.last)
    assert state["format"] == {"checkpoint": checkpoints.CHECKPOINT_FORMAT,
                               "release": gru_lightning.__version__}
    assert state["network"]["class"] == "gru_lightning.networks.rnn.RNN"
    assert state["network"]["settings"]["hidden_size"] == 16
    assert state["num_classes"] == 2 and state["class_names"] == ["neg", "pos"]
    assert state["stack"] is None
    assert all(key.startswith("net.") for key in state["state_dict"])


def test_release_0_1_0_predicts_as_it_did_then():
    predictor = Predictor.from_checkpoint(OLD, device="cpu")
    texts = OLD_PREDICTIONS["texts"]
    torch.testing.assert_close(predictor.predict_proba(texts),
                               torch.tensor(OLD_PREDICTIONS["stacked"]), atol=1e-6, rtol=1e-5)
    network_alone = torch.sigmoid(predictor.network(predictor.encoder.encode(texts)))
    torch.testing.assert_close(network_alone, torch.tensor(OLD_PREDICTIONS["network"]),
                               atol=1e-6, rtol=1e-5)


def test_release_0_1_0_resumes_training(compose_train, tmp_path):
    """Its state_dict (no `net.` prefix), stacking weights and optimizer state go on: a third
    epoch after its two, on the data it was trained on."""
    metrics = train(compose_train(*OLD_SETTINGS, "trainer.max_epochs=3", f"ckpt_path={OLD}"))
    assert metrics["epochs"] == 3 and metrics["test/acc"] >= OLD_PREDICTIONS["test_acc"] - 0.02
    resumed = checkpoints.read(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2 and resumed["format"]["release"] == gru_lightning.__version__
    assert set(resumed["stack"]["stacking"]) >= {"net", "ngram", "net_by_length", "bias"}


def test_the_lightning_module_loads_release_0_1_0(compose_train):
    from hydra.utils import instantiate

    model = TextClassifier.from_checkpoint(str(OLD))
    assert model.stack is not None and model.class_names == ["neg", "pos"]
    datamodule = instantiate(compose_train(*OLD_SETTINGS).data)
    datamodule.setup("fit")
    model.stack.add_scores(datamodule)  # the checkpoint's n-gram model scores the texts
    import lightning as L

    tested = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False
                       ).test(model, datamodule=datamodule, verbose=False)[0]
    # The same figure as the predictor's, which predicts as release 0.1.0 did.
    texts = datamodule.split_texts()["test"]
    labels = datamodule.splits["test"].labels
    predictor = Predictor.from_checkpoint(OLD, device="cpu")
    predicted = predictor.predict_proba(texts) >= 0.5
    assert tested["test/acc"] == pytest.approx((predicted == labels).float().mean().item(),
                                               abs=1e-6)
    # Beside the stack's, the network's own accuracy: its logits alone.
    with torch.no_grad():
        alone = predictor.network(predictor.encoder.encode(list(texts))) >= 0
    assert tested["test/net_acc"] == pytest.approx(
        (alone.long() == labels.long()).float().mean().item(), abs=1e-6)


def test_a_newer_format_is_refused_with_one_message(tmp_path, trained):
    state = torch.load(trained.last, weights_only=True)
    state["format"]["checkpoint"] = 99
    torch.save(state, tmp_path / "future.ckpt")
    with pytest.raises(CheckpointError, match=r"checkpoint format 99 is newer than this "
                                              r"release reads \(3\): upgrade gru-lightning"):
        checkpoints.read(tmp_path / "future.ckpt")


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint", "half"])
def test_a_damaged_file_is_one_clear_error(tmp_path, trained, damage):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained.last.read_bytes()[:20_000] if damage == "half" else damage)
    with pytest.raises(CheckpointError, match=f"ckpt_path='{broken}' is not a readable "
                                              "checkpoint"):
        checkpoints.read(broken, "ckpt_path=")


def test_pickled_code_in_a_checkpoint_is_not_run(tmp_path, trained):
    """weights_only=True: a checkpoint that would run code on loading is refused."""
    state = torch.load(trained.last, weights_only=True)
    state["payload"] = Exploit(tmp_path / "ran")
    torch.save(state, tmp_path / "exploit.ckpt")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        checkpoints.read(tmp_path / "exploit.ckpt")
    assert not (tmp_path / "ran").exists()


class Exploit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


# Release 0.6.0 (format 2: the stacked n-gram model under `ngram`, no scorer's path).
V060 = FIXTURES / "release-0.6.0-nbsvm.pt"
V060_PREDICTIONS = json.loads((FIXTURES / "release-0.6.0-nbsvm.json").read_text())


def _v060_settings(tmp_path: Path) -> list[str]:
    """The data and settings release 0.6.0 trained the fixture with."""
    import csv

    from tests.conftest import synthetic_reviews

    path = tmp_path / "train.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows([t, "pos" if y else "neg"] for t, y in synthetic_reviews(600, 0))
    return ["data=files", f"data.train_file={path}", "data.max_features=100",
            "data.maxlen=24", "data.val_size=100", "model.net.embedding_dim=8",
            "model.net.hidden_size=8", "ngram=nbsvm", "ngram.model.buckets_log2=10",
            "ngram.model.max_vocab=200"]


def test_release_0_6_0_predicts_as_it_did_then_to_the_last_bit():
    predictor = Predictor.from_checkpoint(V060, device="cpu")
    texts = V060_PREDICTIONS["texts"]
    assert torch.equal(predictor.predict_proba(texts),
                       torch.tensor(V060_PREDICTIONS["probabilities"]))
    assert [p.label for p in predictor.predict(texts)] == V060_PREDICTIONS["labels"]
    state = checkpoints.read(V060)
    assert state["stack"]["scorer"] == checkpoints.NGRAM_SCORER and "ngram" not in state["stack"]
    assert state["format"] == {"checkpoint": checkpoints.CHECKPOINT_FORMAT, "release": "0.6.0"}
    assert TextClassifier.from_checkpoint(str(V060)).stack.model.num_classes == 2


def test_release_0_6_0_resumes_training(tmp_path):
    from tests.conftest import compose_train_config

    cfg = compose_train_config(tmp_path, None, *_v060_settings(tmp_path),
                               "trainer.max_epochs=3", f"ckpt_path={V060}")
    metrics = train(cfg)
    assert metrics["epochs"] == 3 and metrics["test/acc"] >= V060_PREDICTIONS["test_acc"] - 0.02
    resumed = checkpoints.read(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert resumed["epoch"] == 2 and resumed["format"]["release"] == gru_lightning.__version__
    assert resumed["stack"]["scorer"] == checkpoints.NGRAM_SCORER
