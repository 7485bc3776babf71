"""Adversarial training (`model.adversarial`, Miyato et al. 2017): the perturbation's size and
direction, the loss it adds, its bad values, and a run that trains and predicts with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gru_lightning.model import TextClassifier
from gru_lightning.networks import RNN
from gru_lightning.objectives import adversarial_losses
from gru_lightning.preprocessing import PAD_ID
from gru_lightning.train import train

NET = RNN(vocab_size=40, embedding_dim=6, hidden_size=5, bidirectional=True, pooling="max_mean")


def batch(texts: int = 4, length: int = 9) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    ids = torch.randint(2, 40, (texts, length))
    ids[0, :4] = PAD_ID  # padded at the front, as the encoder pads
    ids[2, :7] = PAD_ID
    return {"ids": ids, "labels": torch.tensor([0.0, 1.0, 1.0, 0.0])}


def _adversarial(model: TextClassifier, data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """What the classifier's training step computes with `adversarial` (no stack)."""
    return adversarial_losses(model.net, data["ids"], model.hparams.adversarial,
                              lambda logits: logits, lambda z: model.loss_fn(z, data["labels"]))


@pytest.mark.parametrize("epsilon", [0.05, 0.5])
def test_the_perturbation_is_the_gradient_scaled_to_a_share_of_each_texts_words(epsilon):
    torch.manual_seed(1)  # the weights, whatever ran before
    model = TextClassifier(NET, 2, adversarial=epsilon).eval()  # eval: no dropout
    inputs = []
    classify = model.net.classify
    model.net.classify = lambda embedded, ids: (inputs.append(embedded), classify(embedded, ids))[1]
    data = batch()
    logits, clean_loss, loss = _adversarial(model, data)

    clean, perturbed = inputs
    words = (data["ids"] != PAD_ID).unsqueeze(-1)
    expected_clean = model.loss_fn(model.net(data["ids"]), data["labels"])
    reference = model.net.embedding(data["ids"]).detach().requires_grad_()
    (gradient,) = torch.autograd.grad(
        model.loss_fn(classify(reference, data["ids"]), data["labels"]), reference)
    step = (perturbed - clean).detach()
    for text in range(4):
        norm = (reference[text] * words[text]).norm()
        torch.testing.assert_close(step[text].norm(), epsilon * norm)  # the share of the norm
        direction = (gradient[text] * words[text]).flatten()
        cosine = torch.nn.functional.cosine_similarity(step[text].flatten(), direction, dim=0)
        torch.testing.assert_close(cosine, torch.tensor(1.0))  # along the gradient
    assert (step[~words.squeeze(-1)] == 0).all()  # padding stays as it is
    adversarial = model.loss_fn(classify(perturbed.detach(), data["ids"]), data["labels"])
    torch.testing.assert_close(clean_loss, expected_clean)  # what the curves show
    torch.testing.assert_close(loss, expected_clean + adversarial)  # what trains
    assert adversarial > expected_clean  # the perturbation raises the loss: it is adversarial
    torch.testing.assert_close(logits, model.net(data["ids"]))


def test_the_adversarial_pass_adds_to_every_gradient_with_a_frozen_embedding_too():
    for freeze in (False, True):
        torch.manual_seed(2)
        net = RNN(vocab_size=40, embedding_dim=6, hidden_size=5, freeze_embedding=freeze)
        model = TextClassifier(net, 2, adversarial=0.1).eval()
        _, clean, total = _adversarial(model, batch())
        clean_grads = torch.autograd.grad(clean, [p for p in model.parameters() if p.requires_grad],
                                          retain_graph=True)
        total.backward()
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert [n for n, _ in trained] == [n for n, _ in model.named_parameters()
                                           if not (freeze and n == "net.embedding.weight")]
        for (name, param), clean_grad in zip(trained, clean_grads, strict=True):
            assert not torch.allclose(param.grad, clean_grad), name  # the second pass counts
        assert not freeze or model.net.embedding.weight.grad is None


@pytest.mark.parametrize("value", [-0.1, True, "0.1"])
def test_a_bad_perturbation_size_is_a_clear_error(value):
    with pytest.raises(ValueError, match=r"model\.adversarial must be a number >= 0"):
        TextClassifier(NET, 2, adversarial=value)


def test_a_network_without_embed_and_classify_cannot_train_adversarially():
    class Plain(nn.Module):
        def forward(self, ids):
            return ids.float().mean(-1)

    class PlainSettings(RNN):
        def build(self, num_classes):
            return Plain()

    TextClassifier(PlainSettings(), 2)  # without adversarial training it is fine
    with pytest.raises(ValueError, match=r"model\.adversarial needs a network with embed\(\)"):
        TextClassifier(PlainSettings(), 2, adversarial=0.1)


def test_a_run_trains_adversarially_and_its_checkpoint_predicts(compose_train):
    from gru_lightning.predict import Predictor

    cfg = compose_train("model.adversarial=0.02", "trainer.max_epochs=2")
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.9  # the synthetic reviews are learned as without it
    best = next((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch*.ckpt"))
    predictor = Predictor.from_checkpoint(str(best), device="cpu")
    probs = predictor.predict_proba(["a great wonderful film", "an awful boring film"])
    assert probs.shape == (2,)
