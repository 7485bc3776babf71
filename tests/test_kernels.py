"""The compiled CPU kernels (runtime/): the fused GRU against nn.GRU (same outputs,
gradients, parameters) and the word-id kernel against `tokenizers` (same vocabulary and
ids). Each test asserts the kernel is what ran, and skips, saying why, where it cannot be
built; the fallbacks without a compiler are tested too."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gru_lightning.networks import RNN
from gru_lightning.preprocessing import TextEncoder
from gru_lightning.runtime import fused_gru, kernels
from gru_lightning.runtime.fused_gru import FusedGRU
from tests.conftest import require_kernel, synthetic_reviews


@pytest.fixture
def gru_kernel():
    return require_kernel(kernels.gru_kernel)


@pytest.fixture
def word_ids_kernel():
    return require_kernel(kernels.word_ids_kernel)


def _pair(**kwargs) -> tuple[nn.GRU, FusedGRU]:
    torch.manual_seed(0)
    reference = nn.GRU(**kwargs)
    fused = FusedGRU(**kwargs)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


@pytest.fixture
def counted(monkeypatch, gru_kernel) -> list[int]:
    """Calls of the fused kernel's forward: a test that compares with nn.GRU checks the
    kernel ran, not nn.GRU twice."""
    calls = []
    real = fused_gru.available_extension()

    class Counting:
        def forward(self, *args):
            calls.append(1)
            return real.forward(*args)

        def backward(self, *args):
            return real.backward(*args)

    monkeypatch.setattr(fused_gru, "available_extension", lambda: Counting())
    return calls


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
def test_outputs_and_gradients_match_nn_gru(kwargs: dict, counted) -> None:
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
    assert len(counted) == kwargs.get("num_layers", 1) * directions  # one call per layer/way
    (out_ref, h_ref, grads_ref), (out_fused, h_fused, grads_fused) = results
    torch.testing.assert_close(out_fused, out_ref)
    torch.testing.assert_close(h_fused, h_ref)
    for grad_fused, grad_ref in zip(grads_fused, grads_ref, strict=True):
        torch.testing.assert_close(grad_fused, grad_ref)


def test_gradcheck_of_the_recurrence(gru_kernel) -> None:
    torch.manual_seed(0)
    inputs = (torch.randn(4, 2, 9, dtype=torch.double, requires_grad=True),
              torch.randn(2, 3, dtype=torch.double, requires_grad=True),
              torch.randn(9, 3, dtype=torch.double, requires_grad=True),
              torch.randn(9, dtype=torch.double, requires_grad=True))
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda *a, r=reverse: fused_gru._Recurrence.apply(*a, r, True), inputs)


def test_float32_training_step_matches_nn_gru(counted) -> None:
    """The network with and without the kernel: same logits and gradients in float32."""
    torch.manual_seed(0)
    fused = RNN(vocab_size=50, embedding_dim=16, hidden_size=32, fused_gru=True).build(2)
    plain = RNN(vocab_size=50, embedding_dim=16, hidden_size=32, fused_gru=False).build(2)
    plain.load_state_dict(fused.state_dict())  # same parameter names: checkpoints interchange
    ids = torch.randint(0, 50, (8, 40))
    labels = torch.randint(0, 2, (8,)).float()
    grads = []
    for network in (fused, plain):
        loss = nn.functional.binary_cross_entropy_with_logits(network(ids), labels)
        grads.append(torch.autograd.grad(loss, list(network.parameters())))
    assert counted  # the fused network ran the kernel
    torch.testing.assert_close(fused(ids), plain(ids), rtol=1e-5, atol=1e-6)
    for grad_fused, grad_plain in zip(*grads, strict=True):
        torch.testing.assert_close(grad_fused, grad_plain, rtol=1e-4, atol=1e-6)


def test_packed_and_unbatched_input_use_nn_gru(counted) -> None:
    reference, fused = _pair(input_size=4, hidden_size=3, batch_first=True)
    x = torch.randn(2, 5, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
    torch.testing.assert_close(fused(packed)[1], reference(packed)[1])
    torch.testing.assert_close(fused(x[0])[0], reference(x[0])[0])
    assert not counted  # nn.GRU's path for both


@pytest.mark.parametrize(("bidirectional", "num_layers"), [(False, 1), (True, 2)])
def test_forward_from_ids_matches_embedding_then_gru(bidirectional, num_layers, counted):
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
    assert counted
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


def test_without_a_compiler_the_gru_falls_back_to_pytorchs_with_one_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension: g++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    kernels.gru_kernel.cache_clear()
    fused_gru.available_extension.cache_clear()
    try:
        torch.manual_seed(0)
        reference = nn.GRU(4, 3, batch_first=True)
        fused = FusedGRU(4, 3, batch_first=True)
        fused.load_state_dict(reference.state_dict())
        x = torch.randn(2, 5, 4)
        with caplog.at_level("WARNING", logger="gru_lightning.runtime.fused_gru"):
            for _ in range(3):
                torch.testing.assert_close(fused(x), reference(x))
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1  # once per process, not once per call
        assert "g++: command not found" in warnings[0]
        assert "PyTorch's own GRU" in warnings[0] and "model.net.fused_gru=false" in warnings[0]
    finally:
        fused_gru.available_extension.cache_clear()
        kernels.gru_kernel.cache_clear()  # the next test builds (loads) the real one


TRICKY = ["A wonderful film!<br /><br />Loved it... 10/10", "Ünïcödé café, naïve ﬁlm\x85next",
          "[UNK] and [PAD] in the text", "wow!!?? really?!", "", "   ", "a<br />b<BR />c<br/>d",
          "don't won't 'quoted' under_score x2 2x", "tab\tnew\nline\r\nend",
          "\uff26\uff55\uff4c\uff4c width",  # full-width letters
          'Not bad. "Good" (really), x-y; a:b *c/d ^e \\f]g -- end.']


@pytest.mark.parametrize("punctuation", [False, True, '!?.,;:"()-*/', "]^-[\\"])
@pytest.mark.parametrize(("padding", "truncating"), [("pre", "pre"), ("post", "post")])
def test_the_word_id_kernel_matches_tokenizers(monkeypatch, word_ids_kernel, punctuation,
                                               padding, truncating):
    """The compiled kernel (ASCII texts) and `tokenizers` (everything) give the same
    vocabulary and the same ids, on texts made to catch the differences."""
    from gru_lightning import preprocessing

    texts = TRICKY + [t for t, _ in synthetic_reviews(200, seed=4)]
    fast = TextEncoder.fit(texts, 40, 12, padding, truncating, punctuation)
    assert fast.uses_kernel
    monkeypatch.setattr(preprocessing, "word_ids_kernel", lambda: None)
    slow = TextEncoder.fit(texts, 40, 12, padding, truncating, punctuation)
    assert not slow.uses_kernel  # tokenizers alone, every text
    assert fast.tokenizer.to_str() == slow.tokenizer.to_str()
    assert torch.equal(fast.encode(texts), slow.encode(texts))


def test_without_a_compiler_words_are_counted_and_encoded_by_tokenizers(monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: (_ for _ in ()).throw(
        RuntimeError("g++: command not found")))
    kernels.word_ids_kernel.cache_clear()
    try:
        assert kernels.word_ids_kernel() is None
        encoder = TextEncoder.fit(["a b c", "a b", "a"], max_features=5, maxlen=4)
        assert not encoder.uses_kernel
        # Most frequent first after [PAD] and [UNK]: a=2, b=3, c=4.
        assert encoder.encode(["c b a zzz"]).tolist() == [[4, 3, 2, 1]]
    finally:
        kernels.word_ids_kernel.cache_clear()
