"""The classifier in training (model.py): the optimizer from the config, the epoch metrics
against torchmetrics over the whole split, and the outputs they are computed from."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassF1Score,
)

from gru_lightning.data.batches import SliceBatchSampler, TensorBatchDataset, batch_as_is
from gru_lightning.metrics import EpochOutputs
from gru_lightning.model import TextClassifier
from gru_lightning.networks import RNN

SMALL_NET = RNN(vocab_size=50, embedding_dim=8, hidden_size=8)


def adam(**settings):
    return functools.partial(torch.optim.Adam, decoupled_weight_decay=True, **settings)


@pytest.mark.parametrize("fused", [True, False])
def test_weight_decay_is_decoupled(fused):
    # A weight with no gradient still shrinks by lr * weight_decay per step (AdamW), and
    # weight_decay=0 leaves it alone (the notebook's Adam), as conf/model/classifier.yaml
    # configures torch's Adam.
    for weight_decay, expected in ((0.1, 1.0 - 0.01 * 0.1), (0.0, 1.0)):
        model = TextClassifier(SMALL_NET, 2, adam(lr=0.01, weight_decay=weight_decay,
                                                  fused=fused))
        optimizer = model.configure_optimizers()
        for param in model.parameters():
            param.data.fill_(1.0)
            param.grad = torch.zeros_like(param)
        optimizer.step()
        torch.testing.assert_close(model.net.head.weight.data,
                                   torch.full_like(model.net.head.weight, expected))


def test_a_classifier_without_an_optimizer_says_it_predicts_only():
    with pytest.raises(RuntimeError, match="built without an optimizer: it predicts only"):
        TextClassifier(SMALL_NET, 2).configure_optimizers()


@pytest.mark.parametrize("num_classes", [2, 3])
def test_validation_metrics_are_torchmetrics_over_the_whole_split(num_classes):
    """Batches of 64, 64 and 17: the logged accuracy, F1 and AUROC are those of torchmetrics
    over all 145 texts at once, and val/loss the text-weighted mean of the batch losses."""
    torch.manual_seed(0)
    model = TextClassifier(SMALL_NET, num_classes).eval()
    ids = torch.randint(0, 50, (145, 12))
    labels = torch.randint(0, num_classes, (145,))
    labels = labels.float() if num_classes == 2 else labels
    dataset = TensorBatchDataset(ids, labels)
    loader = DataLoader(dataset, batch_sampler=SliceBatchSampler(range(145), 64, False),
                        collate_fn=batch_as_is)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    logged = trainer.validate(model, loader, verbose=False)[0]
    with torch.no_grad():
        logits = model.net(ids)
    if num_classes == 2:
        probs = torch.sigmoid(logits)
        expected = {"val/acc": BinaryAccuracy()(probs, labels.long()),
                    "val/auroc": BinaryAUROC()(probs, labels.long())}
        losses = [torch.nn.functional.binary_cross_entropy_with_logits(logits[s], labels[s])
                  for s in (slice(0, 64), slice(64, 128), slice(128, 145))]
    else:
        probs = torch.softmax(logits, -1)
        expected = {"val/acc": MulticlassAccuracy(3, average="micro")(probs, labels),
                    "val/f1": MulticlassF1Score(3, average="macro")(probs, labels)}
        losses = [torch.nn.functional.cross_entropy(logits[s], labels[s])
                  for s in (slice(0, 64), slice(64, 128), slice(128, 145))]
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value.item(), abs=1e-6), name
    mean_loss = (64 * losses[0] + 64 * losses[1] + 17 * losses[2]) / 145
    assert logged["val/loss"] == pytest.approx(mean_loss.item(), rel=1e-5)
    # Nothing kept for the next epoch.
    assert model.outputs["val"].count == 0


def test_epoch_outputs_grow_and_start_over():
    outputs = EpochOutputs()
    batches = [torch.randn(n, 3) for n in (700, 700, 5)]  # past the first capacity
    for batch in batches:
        outputs.add(logits=batch, labels=batch[:, 0].long())
    taken = outputs.take()
    assert torch.equal(taken["logits"], torch.cat(batches))
    assert torch.equal(taken["labels"], torch.cat(batches)[:, 0].long())  # its own dtype
    outputs.add(logits=batches[2])
    assert torch.equal(outputs.take()["logits"], batches[2])
    assert EpochOutputs().take() == {}
