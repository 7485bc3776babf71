"""The language-model stage (pretrain.py, pretrain=lm): the model learns the texts, hands
over exactly the embedding and recurrent weights, resumes as if never stopped, is cached by
everything that changes it, refuses bad settings in one message each, and trains through the
entry point."""

from __future__ import annotations

import logging
import re
import time

import pytest
import torch

from gru_lightning import pretrain as pretrain_module
from gru_lightning.networks.rnn import RNN
from gru_lightning.predict import Predictor
from gru_lightning.preprocessing import TextEncoder
from gru_lightning.pretrain import (
    LanguageModel,
    LanguageModelPretraining,
    directions,
    handed_over,
    token_stream,
)
from gru_lightning.train import train
from tests.conftest import synthetic_reviews

TEXTS = [t for t, _ in synthetic_reviews(300, 0)]
SMALL = {"bptt": 12, "batch_size": 8, "cutoffs": [20], "lr": 0.01}


def _stream_and_net(bidirectional: bool = False, cell: str = "gru"):
    encoder = TextEncoder.fit(TEXTS, 100, 24)
    net = RNN(vocab_size=100, embedding_dim=8, hidden_size=8, bidirectional=bidirectional,
              cell=cell).build(2)
    return token_stream(encoder.tokenizer, [TEXTS]), net


def _loss(model: LanguageModel, stream: torch.Tensor) -> float:
    with torch.no_grad():
        return model(stream[None, :-1].long(), stream[None, 1:].long())[0].item()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_language_models_loss_falls(tmp_path, cell):
    stream, net = _stream_and_net(cell=cell)
    assert stream.dtype == torch.int32 and (stream == 0).sum() == len(TEXTS)  # end markers
    (embedding, rnn), _ = directions(net)
    model = LanguageModel(embedding, rnn, [20])
    before = _loss(model, stream)
    LanguageModelPretraining(epochs=3, **SMALL).train(model, stream, tmp_path / "ck")
    assert _loss(model, stream) < 0.8 * before
    assert (tmp_path / "ck" / "last.pt").is_file()  # a checkpoint per pass


def test_the_hand_over_copies_the_embedding_and_the_cells_and_nothing_else():
    _, net = _stream_and_net(bidirectional=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    (f_embedding, f_rnn), (b_embedding, b_rnn) = directions(net)
    assert b_rnn is not None and not f_rnn.bidirectional
    models = {d: LanguageModel(e, r, [20]) for d, e, r in
              (("forward", f_embedding, f_rnn), ("backward", b_embedding, b_rnn))}
    with torch.no_grad():
        for model in models.values():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))  # "trained"
    weights = {**handed_over(models["forward"], "forward"),
               **handed_over(models["backward"], "backward")}
    LanguageModelPretraining().initialise(net, weights)
    after = net.state_dict()
    assert torch.equal(after["embedding.weight"], models["forward"].embedding.weight)
    assert torch.equal(after["rnn.weight_hh_l0"], models["forward"].rnn.weight_hh_l0)
    assert torch.equal(after["rnn.weight_hh_l0_reverse"], models["backward"].rnn.weight_hh_l0)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == set(weights) and not any(k.startswith("head.") for k in changed)
    assert len([k for k in changed if k.startswith("rnn.")]) == 8  # 4 per direction


def test_a_resumed_pretraining_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    stream, net = _stream_and_net()
    stage = LanguageModelPretraining(epochs=3, **SMALL)

    def model() -> LanguageModel:
        (embedding, rnn), _ = directions(net)
        torch.manual_seed(0)
        return LanguageModel(embedding, rnn, [20])

    whole = stage.train(model(), stream, tmp_path / "whole")
    real_epoch, calls = stage._epoch, []

    def stop_in_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(stage, "_epoch", stop_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        stage.train(model(), stream, tmp_path / "stopped")
    monkeypatch.setattr(stage, "_epoch", real_epoch)
    resumed = stage.train(model(), stream, tmp_path / "stopped")  # passes 1-2 are kept
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_bad_settings_are_one_clear_message_each(tmp_path):
    for settings, message in (
            ({"max_minutes": 0}, "pretrain.max_minutes must be a positive number"),
            ({"epochs": 0}, "pretrain.epochs must be a positive integer"),
            ({"cutoffs": [50, 20]}, "pretrain.cutoffs must be increasing positive integers"),
            ({"lr": 0}, "pretrain.lr must be positive")):
        with pytest.raises(ValueError, match=re.escape(message)):
            LanguageModelPretraining(**settings)
    with pytest.raises(FileNotFoundError, match=r"pretrain\.unlabeled_file='nope\.txt'"):
        LanguageModelPretraining(unlabeled_file="nope.txt")
    _, net = _stream_and_net()
    other = RNN(vocab_size=100, embedding_dim=8, hidden_size=16).build(2)
    weights = {k: v for k, v in other.state_dict().items() if k.startswith(("embedding", "rnn"))}
    torch.save(weights, tmp_path / "lm.pt")
    stage = LanguageModelPretraining(path=str(tmp_path / "lm.pt"))
    with pytest.raises(ValueError, match=r"do not fit this network: rnn\.weight_ih_l0 is "
                                         r"\(48, 8\), the network's \(24, 8\)"):
        stage.prepare(None, net)
    with pytest.raises(ValueError, match="needs a network with an `embedding`"):
        directions(torch.nn.Linear(2, 2))
    stream, _ = _stream_and_net()
    with pytest.raises(ValueError, match=r"too few for pretrain\.batch_size=64 rows"):
        LanguageModelPretraining().train(LanguageModel(*directions(net)[0], [20]),
                                         stream[:100], tmp_path / "ck")


def test_the_cache_key_changes_with_each_setting_and_the_start(tmp_path, compose_train):
    from hydra.utils import instantiate

    datamodule = instantiate(compose_train().data)
    datamodule.setup("fit")
    _, net = _stream_and_net()
    unlabeled = tmp_path / "more.txt"
    unlabeled.write_text("a b c\n")
    base = LanguageModelPretraining(**SMALL)
    paths = {base.cache_path(datamodule, net)}
    for change in ({"epochs": 2}, {"max_minutes": 5}, {"bptt": 13}, {"batch_size": 9},
                   {"lr": 0.02}, {"cutoffs": [30]}, {"seed": 1},
                   {"unlabeled_file": str(unlabeled)}):
        paths.add(LanguageModelPretraining(**{**SMALL, **change}).cache_path(datamodule, net))
    with torch.no_grad():
        net.embedding.weight[3] += 1  # other starting weights (a seed, word vectors)
    paths.add(base.cache_path(datamodule, net))
    assert len(paths) == 10
    assert base.cache_path(datamodule, net) == base.cache_path(datamodule, net)


def test_pretrain_lm_through_the_entry_point_then_from_its_file(compose_train, tmp_path,
                                                                caplog):
    settings = ["pretrain=lm", "pretrain.epochs=2", "pretrain.bptt=12", "pretrain.batch_size=8",
                "pretrain.cutoffs=[20]", "trainer.max_epochs=4"]
    with caplog.at_level(logging.INFO, logger="gru_lightning.pretrain"):
        metrics = train(compose_train(*settings))
    assert metrics["test/acc"] >= 0.9
    assert "tokens/s, perplexity" in caplog.text
    cached = list((tmp_path / "cache").glob("lm-*.pt"))
    assert len(cached) == 1
    # The run's network started from the language model's weights.
    weights = torch.load(cached[0], weights_only=True)
    assert set(weights) == {"embedding.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0",
                            "rnn.bias_ih_l0", "rnn.bias_hh_l0"}
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = train(compose_train(*settings, f"pretrain.path={cached[0]}",
                                    f"paths.output_dir={tmp_path / 'again'}"))
    assert again["test/acc"] == metrics["test/acc"]  # the same start, the same run
    assert "pretrain=lm: epoch" not in caplog.text  # read, not trained
    predictor = Predictor.from_checkpoint(tmp_path / "again" / "checkpoints" / "last.ckpt")
    assert [p.label for p in predictor.predict(["great superb wonderful loved",
                                                "awful boring dull worst"])] == ["pos", "neg"]


def test_the_stage_leaves_the_runs_random_stream_as_it_was(tmp_path, compose_train):
    from hydra.utils import instantiate

    datamodule = instantiate(compose_train().data)
    datamodule.setup("fit")
    _, net = _stream_and_net()
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    LanguageModelPretraining(**SMALL).prepare(datamodule, net)
    assert torch.equal(torch.rand(3), expected)


def test_token_stream_reads_every_text_in_order():
    encoder = TextEncoder.fit(["a b c", "c d"], 10, 4)
    stream = token_stream(encoder.tokenizer, [["a b c"], ["c d", "a"]])
    vocab = encoder.tokenizer.get_vocab()
    assert stream.tolist() == [vocab["a"], vocab["b"], vocab["c"], 0, vocab["c"], vocab["d"], 0,
                               vocab["a"], 0]
    assert pretrain_module.PAD_ID == 0


def test_the_budget_stops_the_stage_after_the_step_that_spends_it(tmp_path, caplog):
    stream, net = _stream_and_net()
    (embedding, rnn), _ = directions(net)
    stage = LanguageModelPretraining(epochs=3, max_minutes=1e-9, **SMALL)
    with caplog.at_level(logging.INFO, logger="gru_lightning.pretrain"):
        stage.train(LanguageModel(embedding, rnn, [20]), stream, tmp_path / "ck",
                    time.monotonic())
    assert "pretrain.max_minutes=1e-09 spent: the stage stops here, in epoch 1" in caplog.text
    assert not (tmp_path / "ck" / "last.pt").exists()  # stopped inside its first pass


def test_a_frozen_embedding_stays_as_it_was(tmp_path):
    encoder = TextEncoder.fit(TEXTS, 100, 24)
    stream = token_stream(encoder.tokenizer, [TEXTS])
    net = RNN(vocab_size=100, embedding_dim=8, hidden_size=8, freeze_embedding=True).build(2)
    (embedding, rnn), _ = directions(net)
    model = LanguageModel(embedding, rnn, [20])
    LanguageModelPretraining(**SMALL).train(model, stream, tmp_path / "ck")
    assert torch.equal(handed_over(model, "forward")["embedding.weight"], net.embedding.weight)
    assert not torch.equal(handed_over(model, "forward")["rnn.weight_hh_l0"], net.rnn.weight_hh_l0)
