"""The recurrent network (networks/rnn.py): the notebook's parameter count, shapes, options,
initialisation, and its settings' checks."""

from __future__ import annotations

import pytest
import torch

from gru_lightning.networks import RNN, NetworkSettings
from gru_lightning.networks.rnn import masked_pool
from gru_lightning.preprocessing import PAD_ID, UNK_ID


def n_trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_default_network_has_the_keras_parameter_count():
    # Keras: Embedding(10000,128) 1,280,000 + GRU(64) 37,248 + Dense(1) 65.
    assert n_trainable(RNN().build(2)) == 1_317_313
    # One logit per class beyond two: Dense(4) has 4 * 65 weights.
    assert n_trainable(RNN().build(4)) == 1_317_313 - 65 + 4 * 65


@pytest.mark.parametrize(
    ("settings", "features"),
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
def test_forward_shapes(settings, features):
    network = RNN(vocab_size=100, **settings).build(2)
    assert network.head.in_features == features
    assert network(torch.randint(0, 100, (5, 12))).shape == (5,)
    assert network(torch.randint(0, 100, (3, 12), dtype=torch.int32)).shape == (3,)
    assert RNN(vocab_size=100, **settings).build(3)(torch.randint(0, 100, (5, 12))).shape == (5, 3)


def test_lstm_parameter_count():
    # 4 gates instead of 3: 4 * 64 * (128 + 64) + 2 * 4 * 64 weights and biases.
    assert n_trainable(RNN(cell="lstm").build(2)) == 1_280_000 + 49_664 + 65


def test_keras_init():
    torch.manual_seed(0)
    network = RNN(vocab_size=1000, hidden_size=32, init="keras").build(2)
    assert network.embedding.weight.abs().max() <= 0.05
    for name, param in network.rnn.named_parameters():
        if "bias" in name:
            assert torch.count_nonzero(param) == 0
        if "weight_hh" in name:
            for gate in param.chunk(3):
                torch.testing.assert_close(gate @ gate.T, torch.eye(32), atol=1e-5, rtol=0)
    assert torch.count_nonzero(network.head.bias) == 0
    # PyTorch's own init is different: uniform(+-1/sqrt(hidden)) biases are not zero.
    assert torch.count_nonzero(RNN(vocab_size=1000, init="torch").build(2).rnn.bias_hh_l0) > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hidden_size": 0}, "model.net.hidden_size must be a positive integer, got 0"),
        ({"embedding_dim": -3}, "model.net.embedding_dim must be a positive integer"),
        ({"num_layers": 0}, "model.net.num_layers must be a positive integer"),
        ({"vocab_size": 2.5}, "model.net.vocab_size must be a positive integer, got 2.5"),
        ({"dropout": 1.0}, r"model.net.dropout must be in \[0, 1\), got 1.0"),
        ({"embedding_dropout": -0.1}, r"model.net.embedding_dropout must be in \[0, 1\)"),
        ({"word_dropout": 1.0}, r"model.net.word_dropout must be in \[0, 1\)"),
        ({"cell": "rnn"}, r"model.net.cell must be one of \['gru', 'lstm'\], got 'rnn'"),
        ({"init": "xavier"}, "model.net.init must be 'torch' or 'keras'"),
        ({"pooling": "attention"}, "model.net.pooling must be one of"),
    ],
)
def test_bad_settings_are_clear_errors_when_the_settings_are_made(settings, message):
    with pytest.raises(ValueError, match=message):
        RNN(**settings)


def test_num_classes_below_two_is_refused():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2, got 1"):
        RNN().build(1)


def test_settings_round_trip_and_refuse_what_is_not_a_network():
    settings = RNN(hidden_size=8, bidirectional=True, pooling="max")
    assert NetworkSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ValueError, match="is not a network's settings class"):
        NetworkSettings.from_dict({"class": "os.system", "settings": {}})
    with pytest.raises(ValueError, match="cannot be imported"):
        NetworkSettings.from_dict({"class": "no_such_module.Net", "settings": {}})


def test_pooling_ignores_padding():
    outputs = torch.tensor([[[100.0, -100.0], [1.0, 2.0], [3.0, -4.0]],
                            [[5.0, 5.0], [6.0, 6.0], [7.0, 7.0]]])
    mask = torch.tensor([[False, True, True], [False, False, False]]).unsqueeze(-1)
    pooled = masked_pool(outputs, mask, "max_mean")
    # Row 0: max and mean of its two real steps; row 1 is all padding: zeros, not -inf.
    torch.testing.assert_close(pooled, torch.tensor([[3.0, 2.0, 2.0, -1.0], [0.0, 0.0, 0.0, 0.0]]))


def test_embedding_dropout_drops_whole_channels_in_training_only():
    torch.manual_seed(0)
    # PyTorch's GRU: the fused one takes ids (FusedGRU.forward_ids) where no dropout applies.
    network = RNN(vocab_size=50, embedding_dim=64, embedding_dropout=0.5,
                  fused_gru=False).build(2)
    seen = {}
    network.rnn.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    ids = torch.randint(0, 50, (4, 10))
    network.train()
    network(ids)
    zero_channels = (seen["x"] == 0).all(dim=1)  # [batch, channel]: zero at every step
    assert 0 < zero_channels.sum() < zero_channels.numel()
    assert ((seen["x"] == 0) == zero_channels.unsqueeze(1)).all()  # nothing else is zero
    network.eval()
    network(ids)
    torch.testing.assert_close(seen["x"], network.embedding(ids))


def test_word_dropout_replaces_words_not_padding_in_training_only():
    torch.manual_seed(0)
    network = RNN(vocab_size=50, word_dropout=0.3, fused_gru=False).build(2)  # hooks Embedding
    seen = {}
    network.embedding.register_forward_hook(lambda module, args, out: seen.update(ids=args[0]))
    ids = torch.randint(2, 50, (8, 40))
    ids[:, :10] = PAD_ID  # pre-padding
    network.train()
    network(ids)
    changed = seen["ids"] != ids
    assert (seen["ids"][changed] == UNK_ID).all()
    assert not changed[:, :10].any()  # padding stays padding
    assert 0.2 < changed[:, 10:].float().mean() < 0.4
    network.eval()
    network(ids)
    assert torch.equal(seen["ids"], ids)
