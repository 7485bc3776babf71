"""`FusedGRU`: nn.GRU with a faster recurrence on CPU.

PyTorch's CPU GRU runs each time step as ~15 small autograd-recorded ops, so at this
project's sizes (batch 64, hidden 64) its time is mostly per-op overhead, not arithmetic.
`FusedGRU` keeps nn.GRU's parameters, initialisation, state dict and math, and runs the
recurrence in a small C++ extension (`csrc/gru_cpu.cpp`): one GEMM and one fused loop over
the gates per step, forward and backward. The input projection of all steps stays one
autograd-tracked matrix multiply. CUDA tensors, packed sequences and unbatched input use
nn.GRU's own path (cuDNN on a GPU).

The extension is compiled on first use (~20 s on 2 cores; `kernels.py`).
"""

from __future__ import annotations

import logging
from functools import cache
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

from gru_lightning.runtime.kernels import KernelUnavailable, gru_kernel

log = logging.getLogger(__name__)


@cache
def available_extension() -> ModuleType | None:
    """The kernel, or None (with one warning per process) where it cannot be built, e.g. on
    a machine without a C++ compiler: FusedGRU then runs PyTorch's GRU, same math, slower."""
    try:
        return gru_kernel()
    except KernelUnavailable as error:
        log.warning(
            "The fused GRU kernel is unavailable (%s); training goes on with PyTorch's own "
            "GRU, the same model about 2x slower on the CPU. Set model.net.fused_gru=false to "
            "silence this.", error)
        return None


class _Recurrence(torch.autograd.Function):
    """One layer-direction of the recurrence, given the input projection of every step."""

    @staticmethod
    def forward(ctx, x_proj: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                b_hh: torch.Tensor, reverse: bool, save: bool) -> torch.Tensor:
        # `save` comes from the caller: under no_grad, needs_input_grad still says True for
        # parameters, and saving the gate activations would cost ~25 MB a validation batch.
        out, acts = available_extension().forward(x_proj, h0, w_hh, b_hh, reverse, save)
        if save:
            ctx.save_for_backward(out, acts, h0, w_hh)
            ctx.reverse = reverse
        ctx.set_materialize_grads(False)  # no zero-filled [T, B, H] when only h_n is used
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor | None):
        out, acts, h0, w_hh = ctx.saved_tensors
        if grad_out is None:
            return None, None, None, None, None, None
        # The last state is an output step too: its gradient arrives through grad_out.
        grad_x, grad_h0, grad_w, grad_b = available_extension().backward(
            grad_out, out, acts, h0, w_hh, ctx.reverse)
        return grad_x, grad_h0, grad_w, grad_b, None, None


# Above this share of distinct ids among a batch's tokens, forward_ids projects per token.
DISTINCT_WORDS_MAX = 0.5


class _EmbeddingProjection(torch.autograd.Function):
    """The first layer's input projection straight from token ids:
    `embedding[ids] @ w_ih.T + b_ih`, computed once per distinct id in the batch.

    A batch of 64 IMDB reviews of 100 tokens holds ~1,600 distinct words, so the three large
    matrix products of a training step that involve the embeddings (this projection, and in
    backward the gradients of `w_ih` and of the embedding rows) shrink about 4x: the tokens'
    gradients are summed per word first, then multiplied. Same math as nn.Embedding followed
    by the projection, up to rounding."""

    @staticmethod
    def forward(ctx, words: torch.Tensor, inverse: torch.Tensor, embedding: torch.Tensor,
                w_ih: torch.Tensor, b_ih: torch.Tensor | None) -> torch.Tensor:
        """`words`, `inverse`: `torch.unique(ids, return_inverse=True)`."""
        rows = embedding[words]
        table = (torch.addmm(b_ih, rows, w_ih.t()) if b_ih is not None
                 else rows.mm(w_ih.t()))  # [distinct words, 3H]
        ctx.save_for_backward(words, inverse, rows, w_ih)
        ctx.vocab_size, ctx.has_bias = embedding.size(0), b_ih is not None
        return table[inverse]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        words, inverse, rows, w_ih = ctx.saved_tensors
        per_word = grad.new_zeros(len(words), grad.size(-1)).index_add_(
            0, inverse.reshape(-1), grad.reshape(-1, grad.size(-1)))
        grad_embedding = grad_w = grad_b = None
        if ctx.needs_input_grad[2]:  # dense, as nn.Embedding's
            grad_embedding = grad.new_zeros(ctx.vocab_size, rows.size(1))
            grad_embedding[words] = per_word.mm(w_ih)
        if ctx.needs_input_grad[3]:
            grad_w = per_word.t().mm(rows)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_b = per_word.sum(0)
        return None, None, grad_embedding, grad_w, grad_b


class FusedGRU(nn.GRU):
    """Drop-in nn.GRU (same constructor, parameters and outputs) with the fused CPU kernel."""

    def _uses_kernel(self, input: torch.Tensor) -> bool:
        return not (isinstance(input, nn.utils.rnn.PackedSequence) or input.device.type != "cpu"
                    or torch.compiler.is_compiling()  # torch.export / compile trace nn.GRU
                    or available_extension() is None)  # no compiler: PyTorch's GRU, warned once

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None):
        if (not self._uses_kernel(input) or input.dim() != 3
                or input.dtype not in (torch.float32, torch.float64)):
            return super().forward(input, hx)
        x = input.transpose(0, 1) if self.batch_first else input  # [T, B, features]
        return self._run(x, x.size(1), hx, needs_grad=input.requires_grad)

    def forward_ids(self, ids: torch.Tensor, embedding: torch.Tensor,
                    hx: torch.Tensor | None = None):
        """`forward(F.embedding(ids, embedding), hx)` for ids `[batch, time]` (batch_first) or
        `[time, batch]`, with the first layer's input projection taken per distinct id
        (`_EmbeddingProjection`); the embedding's gradient flows as through F.embedding."""
        if (not self._uses_kernel(ids) or ids.dim() != 2
                or embedding.dtype not in (torch.float32, torch.float64)):
            return self.forward(F.embedding(ids, embedding), hx)
        time_major = ids.t() if self.batch_first else ids  # [T, B]
        words, inverse = torch.unique(time_major, return_inverse=True)
        if len(words) > DISTINCT_WORDS_MAX * time_major.numel():
            # Mostly distinct tokens (e.g. random ids): nothing to share, per token is faster.
            return self.forward(F.embedding(ids, embedding), hx)
        return self._run(None, time_major.size(1), hx, needs_grad=embedding.requires_grad,
                         first_projection=lambda w, b: _EmbeddingProjection.apply(
                             words, inverse, embedding, w, b))

    def _run(self, x: torch.Tensor | None, batch: int, hx: torch.Tensor | None,
             needs_grad: bool, first_projection=None):
        """The layers over time-major input `x` [T, B, features], or from `first_projection`
        (weight_ih, bias_ih) -> [T, B, 3H] for the first layer when x is None."""
        directions = 2 if self.bidirectional else 1
        if hx is None:
            hx = self.weight_hh_l0.new_zeros(self.num_layers * directions, batch,
                                             self.hidden_size)
        finals = []
        save = torch.is_grad_enabled() and (needs_grad or hx.requires_grad or any(
            p.requires_grad for p in self.parameters()))
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            outputs = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                w_ih = getattr(self, "weight_ih" + suffix)
                b_ih = getattr(self, "bias_ih" + suffix) if self.bias else None
                x_proj = (first_projection(w_ih, b_ih) if layer == 0 and x is None
                          else F.linear(x, w_ih, b_ih))
                bias_hh = (getattr(self, "bias_hh" + suffix) if self.bias
                           else x_proj.new_zeros(3 * self.hidden_size))
                out = _Recurrence.apply(x_proj, hx[layer * directions + direction],
                                        getattr(self, "weight_hh" + suffix), bias_hh,
                                        bool(direction), save)
                outputs.append(out)
                finals.append(out[0] if direction else out[-1])
            x = torch.cat(outputs, dim=-1) if directions == 2 else outputs[0]
        output = x.transpose(0, 1) if self.batch_first else x
        return output, torch.stack(finals)
