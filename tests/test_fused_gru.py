"""The fused CPU GRU kernel against nn.GRU: same outputs, same gradients, same parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gru_lightning import fused_gru
from gru_lightning.fused_gru import FusedGRU
from gru_lightning.model import SentimentRNN


def _pair(**kwargs) -> tuple[nn.GRU, FusedGRU]:
    torch.manual_seed(0)
    reference = nn.GRU(**kwargs)
    fused = FusedGRU(**kwargs)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_first": True},
        {"batch_first": False},
        {"batch_first": True, "bidirectional": True},
        {"batch_first": True, "num_layers": 2, "bidirectional": True},
        {"batch_first": True, "bias": False},
    ],
)
def test_outputs_and_gradients_match_nn_gru(kwargs: dict) -> None:
    reference, fused = _pair(input_size=6, hidden_size=5, **kwargs)
    reference.double()
    fused.double()
    directions = 2 if kwargs.get("bidirectional") else 1
    shape = (3, 7, 6) if kwargs["batch_first"] else (7, 3, 6)
    x = torch.randn(*shape, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(kwargs.get("num_layers", 1) * directions, 3, 5, dtype=torch.double,
                     requires_grad=True)
    results = []
    for module in (reference, fused):
        output, h_n = module(x, h0)
        # Weights on both outputs, so every path of the backward pass is checked.
        loss = (output * torch.linspace(-1, 1, output.numel(), dtype=torch.double)
                .view_as(output)).sum() + (h_n * 0.5).sum()
        grads = torch.autograd.grad(loss, [x, h0, *module.parameters()])
        results.append((output, h_n, grads))
    (out_ref, h_ref, grads_ref), (out_fused, h_fused, grads_fused) = results
    torch.testing.assert_close(out_fused, out_ref)
    torch.testing.assert_close(h_fused, h_ref)
    for grad_fused, grad_ref in zip(grads_fused, grads_ref, strict=True):
        torch.testing.assert_close(grad_fused, grad_ref)


def test_gradcheck_of_the_recurrence() -> None:
    torch.manual_seed(0)
    inputs = (torch.randn(4, 2, 9, dtype=torch.double, requires_grad=True),
              torch.randn(2, 3, dtype=torch.double, requires_grad=True),
              torch.randn(9, 3, dtype=torch.double, requires_grad=True),
              torch.randn(9, dtype=torch.double, requires_grad=True))
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda *a, r=reverse: fused_gru._Recurrence.apply(*a, r, True), inputs)


def test_float32_training_step_matches_nn_gru() -> None:
    """The model with and without the kernel: same logits and gradients in float32."""
    torch.manual_seed(0)
    fused = SentimentRNN(vocab_size=50, embedding_dim=16, hidden_size=32, fused_gru=True)
    plain = SentimentRNN(vocab_size=50, embedding_dim=16, hidden_size=32, fused_gru=False)
    plain.load_state_dict(fused.state_dict())  # same parameter names: checkpoints interchange
    ids = torch.randint(0, 50, (8, 40))
    labels = torch.randint(0, 2, (8,)).float()
    grads = []
    for model in (fused, plain):
        loss = model.loss_fn(model(ids), labels)
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    torch.testing.assert_close(fused(ids), plain(ids), rtol=1e-5, atol=1e-6)
    for grad_fused, grad_plain in zip(*grads, strict=True):
        torch.testing.assert_close(grad_fused, grad_plain, rtol=1e-4, atol=1e-6)


def test_packed_and_unbatched_input_use_nn_gru() -> None:
    reference, fused = _pair(input_size=4, hidden_size=3, batch_first=True)
    x = torch.randn(2, 5, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    torch.testing.assert_close(fused(packed)[1], reference(packed)[1])
    torch.testing.assert_close(fused(x[0])[0], reference(x[0])[0])


def test_without_a_compiler_it_falls_back_to_pytorchs_gru_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    fused_gru.extension.cache_clear()
    fused_gru.available_extension.cache_clear()
    try:
        torch.manual_seed(0)
        reference = nn.GRU(4, 3, batch_first=True)
        fused = FusedGRU(4, 3, batch_first=True)
        fused.load_state_dict(reference.state_dict())
        x = torch.randn(2, 5, 4)
        with caplog.at_level("WARNING", logger="gru_lightning.fused_gru"):
            for _ in range(3):
                torch.testing.assert_close(fused(x), reference(x))
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # once per process, not once per call
        assert "g++: command not found" in warnings[0]
        assert "PyTorch's own GRU" in warnings[0] and "model.fused_gru=false" in warnings[0]
    finally:
        fused_gru.available_extension.cache_clear()
        fused_gru.extension.cache_clear()  # the next test builds (loads) the real one


@pytest.mark.parametrize(("bidirectional", "num_layers"), [(False, 1), (True, 2)])
def test_forward_from_ids_matches_embedding_then_gru(bidirectional, num_layers):
    """FusedGRU.forward_ids projects each distinct word once; outputs and every gradient,
    the embedding's included, match nn.Embedding + nn.GRU in float64."""
    torch.manual_seed(0)
    embedding = nn.Embedding(60, 8).double()
    reference = nn.GRU(8, 6, num_layers=num_layers, batch_first=True,
                       bidirectional=bidirectional).double()
    fused = FusedGRU(8, 6, num_layers=num_layers, batch_first=True,
                     bidirectional=bidirectional).double()
    fused.load_state_dict(reference.state_dict())
    weight = embedding.weight.detach().clone().requires_grad_()
    ids = torch.randint(0, 12, (5, 9))  # few distinct words: the shared projection runs
    out, h = reference(embedding(ids))
    fused_out, fused_h = fused.forward_ids(ids, weight)
    torch.testing.assert_close(fused_out, out)
    torch.testing.assert_close(fused_h, h)
    (out.sum() + h.pow(2).sum()).backward()
    (fused_out.sum() + fused_h.pow(2).sum()).backward()
    torch.testing.assert_close(weight.grad, embedding.weight.grad)
    for mine, theirs in zip(fused.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad)
    distinct = torch.arange(45).reshape(5, 9)  # all distinct: projected per token instead
    torch.testing.assert_close(fused.forward_ids(distinct, weight)[0],
                               reference(embedding(distinct))[0])
