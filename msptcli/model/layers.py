"""The building blocks every network of ``model/`` shares: point-wise layers, initialisation, row gathers, chunks.

Notation: N packed points (``layout.py``) of C channels; a chunk is a run of whole patches
``p0:p1`` whose points are the packed rows ``n0:n1`` (the whole layout is one chunk).

    Mlp(x)        = W_2 GELU(W_1 x + b_1) + b_2              point-wise (GeluLinear in training)
    Embedding(f)  = Mlp([f ; sin(2^k pi x) ; cos(2^k pi x)])  the input MLP, optional Fourier features
    gather_rows   x[index] for an index of any shape           (n, D) -> (*index.shape, D)
    over_chunks   fn(chunk) of every chunk, stacked             streaming forward passes
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msptcli.model.layout import PatchChunk, PatchLayout


class Mlp(nn.Module):
    """Linear -> GELU -> Linear.

    In training (float32, eager) the GELU and the second linear layer are one autograd step
    (:class:`GeluLinear`) that keeps only the hidden pre-activation for the backward and recomputes
    its GELU there: the same values and gradients, and the largest saved activation of a block
    (``mlp_ratio * C`` per point) is kept once instead of twice.
    """

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, dim_hidden)
        self.fc2 = nn.Linear(dim_hidden, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        a = self.fc1(x)
        if (
            torch.is_grad_enabled()
            and not torch.is_autocast_enabled(a.device.type)
            and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
        ):
            return GeluLinear.apply(a, self.fc2.weight, self.fc2.bias)
        return self.fc2(F.gelu(a))


class GeluLinear(torch.autograd.Function):
    """y = GELU(a) W^T + b, saving a alone: GELU(a) is recomputed in the backward (elementwise, cheap)."""

    @staticmethod
    def forward(ctx, a: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(a, weight)
        return F.linear(F.gelu(a), weight, bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        a, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        hidden = F.gelu(a).reshape(-1, a.shape[-1])
        grad_a = torch.ops.aten.gelu_backward(grad @ weight, a)
        return grad_a, g.t() @ hidden, g.sum(0)


class Embedding(Mlp):
    """The point-wise input MLP, optionally over Fourier features of the coordinates (the first three inputs):

        e_i = MLP([f_i ; sin(2^k pi x_i) ; cos(2^k pi x_i)]),   k = 0 .. num_frequencies - 1

    Sines of octave frequencies let an MLP resolve position at scales finer than its smooth
    activations would (Tancik et al., 2020); ``num_frequencies = 0`` is the plain MLP.
    """

    def __init__(self, in_features: int, dim: int, num_frequencies: int = 0) -> None:
        super().__init__(in_features + 6 * num_frequencies, dim, dim)
        self.num_frequencies = num_frequencies  # a Python int: tracing records no branch on a tensor
        freq = torch.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float64)
        self.register_buffer("freq", freq, persistent=False)

    def forward(self, f: Tensor) -> Tensor:
        if self.num_frequencies:
            angle = (f[:, :3, None] * self.freq.to(f.dtype)).flatten(1)  # (n, 3 * num_frequencies)
            f = torch.cat([f, torch.sin(angle), torch.cos(angle)], dim=1)
        return super().forward(f)


def over_chunks(chunks: Sequence[PatchChunk], rows: Callable[[PatchChunk], slice], fn: Callable[[PatchChunk], Tensor]):
    """``fn(chunk)`` of every chunk, stacked into one tensor at the rows ``rows(chunk)``.

    One chunk (the whole layout): ``fn``'s own result, so autograd sees no copy.
    """
    if len(chunks) == 1:
        return fn(chunks[0])
    out = None
    for chunk in chunks:
        y = fn(chunk)
        if out is None:
            out = y.new_empty((rows(chunks[-1]).stop, *y.shape[1:]))
        out[rows(chunk)] = y
    return out


def point_rows(chunk: PatchChunk) -> slice:
    """The packed rows (of an (N, ...) tensor) of the chunk's points."""
    return slice(chunk.n0, chunk.n1)


def supernode_rows(chunk: PatchChunk, num_supernodes: int) -> slice:
    """The rows (of a (P * Q, ...) tensor, Q = ``num_supernodes``) of the supernodes of the chunk's patches."""
    return slice(chunk.p0 * num_supernodes, chunk.p1 * num_supernodes)


def point_chunks(features: Tensor, layout: PatchLayout, chunk_points: int | None) -> list[PatchChunk]:
    """The runs of whole patches a forward pass over every point processes in turn (one: the whole layout),
    checked: ``features`` has a row per point, and a pass in several chunks runs without autograd."""
    n = layout.num_points
    if not torch.jit.is_tracing() and features.shape[0] != n:  # traced: both are the same graph value
        raise ValueError(f"features have {features.shape[0]} rows but the layout has {n} points")
    chunks = [layout.whole] if chunk_points is None else list(layout.chunks(chunk_points))
    if len(chunks) > 1 and torch.is_grad_enabled():
        raise ValueError("a forward pass in chunks updates features in place: run it under torch.no_grad()")
    return chunks


def patch_rows(x: Tensor, chunk: PatchChunk) -> Tensor:
    """(n, D) rows of the chunk's points -> (p, L, D) patch by patch: a view when every patch is full."""
    p, length = chunk.patch_index.shape
    return x.view(p, length, x.shape[1]) if chunk.exact else gather_rows(x, chunk.patch_index)


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[index]`` for a (long) index tensor of any shape, through ``index_select``.

    Same values as advanced indexing; its backward is an ``index_add`` rather than
    the much slower ``index_put`` with accumulation.
    """
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def channels(in_features: int, out_features: int) -> tuple[int, int]:
    """The input and output channels of a network, checked positive."""
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
    return in_features, out_features


def init_weights(module: nn.Module) -> None:
    """Linear layers: truncated normal weights (std 0.02), zero biases (every backbone, as their references)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
