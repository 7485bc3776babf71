"""The LightningModule: the notebook's parameter count, shapes, options, initialisation."""

from __future__ import annotations

import pytest
import torch

from gru_lightning.model import EpochRows, SentimentRNN
from gru_lightning.preprocessing import PAD_ID, UNK_ID


def n_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_default_model_has_the_keras_parameter_count():
    # Keras: Embedding(10000,128) 1,280,000 + GRU(64) 37,248 + Dense(1) 65.
    assert n_trainable(SentimentRNN()) == 1_317_313


@pytest.mark.parametrize(
    ("kwargs", "features"),
    [
        ({}, 64),
        ({"cell": "lstm"}, 64),
        ({"bidirectional": True}, 128),
        ({"num_layers": 2, "dropout": 0.2}, 64),
        ({"num_layers": 3, "bidirectional": True, "cell": "lstm", "init": "torch"}, 128),
        ({"pooling": "max"}, 64),
        ({"pooling": "mean", "cell": "lstm"}, 64),
        ({"pooling": "max_mean", "bidirectional": True}, 256),
    ],
)
def test_forward_shapes(kwargs, features):
    model = SentimentRNN(vocab_size=100, **kwargs)
    assert model.head.in_features == features
    logits = model(torch.randint(0, 100, (5, 12)))
    assert logits.shape == (5,)
    probs = model.predict_step(torch.randint(0, 100, (3, 12), dtype=torch.int32), 0)
    assert probs.shape == (3,) and bool(((probs > 0) & (probs < 1)).all())


def test_lstm_parameter_count():
    # 4 gates instead of 3: 4 * 64 * (128 + 64) + 2 * 4 * 64 weights and biases.
    assert n_trainable(SentimentRNN(cell="lstm")) == 1_280_000 + 49_664 + 65


def test_keras_init():
    torch.manual_seed(0)
    model = SentimentRNN(vocab_size=1000, hidden_size=32, init="keras")
    assert model.embedding.weight.abs().max() <= 0.05
    for name, param in model.rnn.named_parameters():
        if "bias" in name:
            assert torch.count_nonzero(param) == 0
        if "weight_hh" in name:
            for gate in param.chunk(3):
                torch.testing.assert_close(gate @ gate.T, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.count_nonzero(model.head.bias) == 0
    # PyTorch's own init is different: uniform(+-1/sqrt(hidden)) biases are not zero.
    assert torch.count_nonzero(SentimentRNN(vocab_size=1000, init="torch").rnn.bias_hh_l0) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 0}, "model.hidden_size must be a positive integer, got 0"),
        ({"embedding_dim": -3}, "model.embedding_dim must be a positive integer"),
        ({"num_layers": 0}, "model.num_layers must be a positive integer"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"embedding_dropout": -0.1}, r"model.embedding_dropout must be in \[0, 1\)"),
        ({"word_dropout": 1.0}, r"model.word_dropout must be in \[0, 1\)"),
        ({"cell": "rnn"}, "model.cell must be one of"),
        ({"init": "xavier"}, "model.init must be 'torch' or 'keras'"),
        ({"pooling": "attention"}, "model.pooling must be one of"),
        ({"lr": 0}, "model.lr must be positive"),
        ({"lr_schedule": "step"}, "model.lr_schedule must be 'constant' or 'cosine'"),
        ({"adam_eps": 0.0}, "model.adam_eps must be positive"),
        ({"weight_decay": -0.01}, "model.weight_decay must be >= 0"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SentimentRNN(**kwargs)


@pytest.mark.parametrize("fused_adam", [True, False])
def test_weight_decay_is_decoupled(fused_adam):
    # A weight with no gradient still shrinks by lr * weight_decay per step (AdamW), and
    # weight_decay=0 leaves it alone (the notebook's Adam).
    for weight_decay, expected in ((0.1, 1.0 - 0.01 * 0.1), (0.0, 1.0)):
        model = SentimentRNN(vocab_size=10, embedding_dim=4, hidden_size=3, lr=0.01,
                             weight_decay=weight_decay, fused_adam=fused_adam)
        optimizer = model.configure_optimizers()
        for param in model.parameters():
            param.data.fill_(1.0)
            param.grad = torch.zeros_like(param)
        optimizer.step()
        torch.testing.assert_close(model.head.weight.data,
                                   torch.full_like(model.head.weight, expected))


def test_pooling_ignores_padding():
    outputs = torch.tensor([[[100.0, -100.0], [1.0, 2.0], [3.0, -4.0]],
                            [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]])
    mask = torch.tensor([[False, True, True], [False, False, False]]).unsqueeze(-1)
    pooled = SentimentRNN._pool(outputs, mask, "max_mean")
    # Row 0: max and mean of its two real steps; row 1 is all padding: zeros, not -inf.
    torch.testing.assert_close(pooled, torch.tensor([[3.0, 2.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))


def test_embedding_dropout_drops_whole_channels_in_training_only():
    torch.manual_seed(0)
    # PyTorch's GRU: the fused one takes ids (FusedGRU.forward_ids) where no dropout applies.
    model = SentimentRNN(vocab_size=50, embedding_dim=64, embedding_dropout=0.5, fused_gru=False)
    seen = {}
    model.rnn.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    ids = torch.randint(0, 50, (4, 10))
    model.train()
    model(ids)
    zero_channels = (seen["x"] == 0).all(dim=1)  # [batch, channel]: zero at every step
    assert 0 < zero_channels.sum() < zero_channels.numel()
    assert ((seen["x"] == 0) == zero_channels.unsqueeze(1)).all()  # nothing else is zero
    model.eval()
    model(ids)
    torch.testing.assert_close(seen["x"], model.embedding(ids))


def test_word_dropout_replaces_words_not_padding_in_training_only():
    torch.manual_seed(0)
    model = SentimentRNN(vocab_size=50, word_dropout=0.3, fused_gru=False)  # hooks nn.Embedding
    seen = {}
    model.embedding.register_forward_hook(lambda module, args, out: seen.update(ids=args[0]))
    ids = torch.randint(2, 50, (8, 40))
    ids[:, :10] = PAD_ID  # pre-padding
    model.train()
    model(ids)
    changed = seen["ids"] != ids
    assert (seen["ids"][changed] == UNK_ID).all()
    assert not changed[:, :10].any()  # padding stays padding
    assert 0.2 < changed[:, 10:].float().mean() < 0.4
    model.eval()
    model(ids)
    assert torch.equal(seen["ids"], ids)


def test_epoch_rows_grow_and_start_over():
    rows = EpochRows()
    batches = [torch.randn(n, 3) for n in (700, 700, 5)]  # past the first capacity
    for batch in batches:
        rows.add(batch)
    assert torch.equal(rows.take(), torch.cat(batches))
    rows.add(batches[2])
    assert torch.equal(rows.take(), batches[2])
    assert len(EpochRows().take()) == 0


@pytest.mark.parametrize("num_classes", [2, 3])
def test_epoch_metrics_match_torchmetrics_over_the_batches(num_classes):
    """One update per epoch from the kept rows gives what a per-step update gave: accuracy,
    F1, AUROC and the sample-weighted mean of the batch losses."""
    torch.manual_seed(0)
    model = SentimentRNN(num_classes=num_classes)
    reference = model.val_metrics.clone()
    losses, sizes = [], []
    for n in (64, 64, 17):
        logits = torch.randn(n) if num_classes == 2 else torch.randn(n, num_classes)
        labels = torch.randint(0, num_classes, (n,))
        labels = labels.float() if num_classes == 2 else labels
        loss, probs, _ = model._accumulate("val", logits, labels)
        reference.update(probs, labels.long())
        losses.append(float(loss))
        sizes.append(n)
    values = model._epoch_values("val")
    for name, value in reference.compute().items():
        assert torch.allclose(values[name], value), name
    mean_loss = sum(loss * n for loss, n in zip(losses, sizes, strict=True)) / sum(sizes)
    assert values["val/loss"].item() == pytest.approx(mean_loss, rel=1e-6)
    assert model._rows["val"].count == 0
