"""Transolver (Wu et al., ICML 2024): Physics-Attention over learned slices of every cloud.

Notation: N packed points of B clouds, C channels, H heads of d = C / H channels, G slices
per head, b(i) the cloud of point i, u_i = LN(x_i) and (.)_h the d channels of head h.
Physics-Attention (paper Sec. 3.1) lets every point belong softly to G slices, attends among
one token per slice, and spreads the result back, in every head h:

    w_ihg  = softmax_g(W_s (W_a u_i)_h / tau_h)                    slice weights       (N, H, G)
    z_bhg  = sum_{i in b} w_ihg (W_f u_i)_h / (sum_{i in b} w_ihg + 1e-5)   tokens  (B, H, G, d)
    z'_bh  = softmax(q(z_bh) k(z_bh)^T / sqrt(d)) v(z_bh)          among a cloud's G tokens
    o_i    = W_o [sum_g w_ihg z'_{b(i)hg}]_{h = 1..H}              deslice             (N, C)

and the network is a pre-norm transformer with it in place of self-attention:

    x_0    = MLP(f_i) + p                                          point-wise, p a learned vector
    x'     = x + PhysicsAttention(LN(x)),   x_next = x' + MLP(LN(x'))

This follows the official car-design model (thuml/Transolver @ 75e0f67,
``Car-Design-ShapeNetCar/models/Transolver.py``), which reads the coordinates among its input
features as we do; its last block's LayerNorm and Linear are the head the caller applies, so
``forward`` returns the features before them. W_s is shared by the heads, tau_h is learned per
head (starting at 0.5), q, k, v have no bias. W_s starts orthogonal, as the official attention
module sets it (the official model's weight init then redraws it with std 0.02, like every Linear).

Packed clouds: a point weighs only its own cloud's slices, ``w_i (x) onehot(b(i))`` in
R^{H x BG}, so the tokens of all clouds are one contraction and deslicing its transpose, at B
times the cost of one cloud's (a batch holds a few clouds). The tokens do not depend on the
order of a cloud's points: the ball-tree order, the rotated trees and the positions (beyond
the features) play no part.

Streaming (``chunk_points``, inference only): a token needs every point of its cloud, so each
block sums the numerators and denominators of the tokens over row chunks, attends among the
tokens once, then updates the chunks one after the other in place. Peak memory is the (N, C)
features plus one chunk's temporaries; chunks are plain row ranges and may cut clouds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.config import ModelConfig
from msptcli.model.layers import Mlp, init_weights
from msptcli.model.layout import PatchLayout, point_cloud

#: Added to a slice's total weight before dividing by it (the official code's constant).
SLICE_EPS = 1e-5


class PhysicsAttention(nn.Module):
    """Slice, attend among the slice tokens of every cloud, deslice (the module docstring's four lines).

    :meth:`forward` is the whole pass; streaming calls its steps on chunks of points:
    :meth:`slice_weights` and :meth:`slice_sums` per chunk, :meth:`attend_slices` once, :meth:`deslice` per chunk.
    """

    def __init__(self, dim: int, num_heads: int, num_slices: int) -> None:
        super().__init__()
        self.num_heads, self.num_slices = num_heads, num_slices
        head_dim = dim // num_heads
        self.in_project_x = nn.Linear(dim, dim)  # W_a: what decides the slices
        self.in_project_fx = nn.Linear(dim, dim)  # W_f: what the slices carry
        self.in_project_slice = nn.Linear(head_dim, num_slices)  # W_s, shared by the heads
        self.temperature = nn.Parameter(torch.full((num_heads, 1), 0.5))  # tau_h
        self.to_q = nn.Linear(head_dim, head_dim, bias=False)
        self.to_k = nn.Linear(head_dim, head_dim, bias=False)
        self.to_v = nn.Linear(head_dim, head_dim, bias=False)
        self.to_out = nn.Linear(dim, dim)  # W_o

    def slice_weights(self, h: Tensor, member: Tensor) -> Tensor:
        """(n, C) normalised features u, (n, B) one-hot clouds -> (n, H, B * G) weights w over the slices of
        all clouds, zero outside the point's own."""
        n, _ = h.shape
        a = self.in_project_x(h).view(n, self.num_heads, -1)  # (n, H, d)
        w = torch.softmax(self.in_project_slice(a) / self.temperature, dim=-1)  # (n, H, G)
        w = w[:, :, None, :] * member[:, None, :, None].to(w.dtype)  # (n, H, B, G)
        return w.flatten(2)  # (n, H, B * G)

    def slice_sums(self, h: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """Over these points: the numerators sum_i w_ihg (W_f u_i)_h (H, B * G, d) and denominators (H, B * G)."""
        n, _ = h.shape
        f = self.in_project_fx(h).view(n, self.num_heads, -1)  # (n, H, d)
        return torch.einsum("nhs,nhd->hsd", w, f), w.sum(dim=0)

    def attend_slices(self, num: Tensor, den: Tensor) -> Tensor:
        """The slice tokens from their sums, attended among the G tokens of each cloud: (H, B * G, d)."""
        heads, s, d = num.shape
        z = num / (den + SLICE_EPS)[..., None]  # (H, B * G, d)
        z = z.view(heads, s // self.num_slices, self.num_slices, d).transpose(0, 1)  # (B, H, G, d)
        z = F.scaled_dot_product_attention(self.to_q(z), self.to_k(z), self.to_v(z))  # (B, H, G, d)
        return z.transpose(0, 1).reshape(heads, s, d)  # (H, B * G, d)

    def deslice(self, w: Tensor, tokens: Tensor) -> Tensor:
        """(n, H, B * G) weights, (H, B * G, d) attended tokens -> (n, C): each point from its cloud's tokens."""
        o = torch.einsum("nhs,hsd->nhd", w, tokens)  # (n, H, d)
        return self.to_out(o.flatten(1))  # (n, C)

    def forward(self, h: Tensor, member: Tensor) -> Tensor:
        """(N, C) normalised features of all points, (N, B) one-hot clouds -> (N, C)."""
        w = self.slice_weights(h, member)
        return self.deslice(w, self.attend_slices(*self.slice_sums(h, w)))


class TransolverBlock(nn.Module):
    """One pre-norm block: Physics-Attention with residual, then an MLP with residual."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.width
        self.norm1 = nn.LayerNorm(dim)
        self.attn = PhysicsAttention(dim, config.num_heads, config.transolver_settings.slices)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), dim)

    def forward(self, x: Tensor, member: Tensor) -> Tensor:
        """(N, C) points of all clouds, (N, B) their one-hot clouds -> (N, C)."""
        x = x + self.attn(self.norm1(x), member)
        return x + self.mlp(self.norm2(x))

    def stream(self, x: Tensor, member: Tensor, rows: list[slice]) -> Tensor:
        """The block on ``x`` in place, over the row ranges ``rows`` one after the other (no autograd)."""
        attn = self.attn
        acc = torch.promote_types(x.dtype, torch.float32)  # sums of bf16 chunks in float32
        num = den = None
        for r in rows:  # pass 1: the tokens' sums over all points of every cloud
            h = self.norm1(x[r])
            num_r, den_r = attn.slice_sums(h, attn.slice_weights(h, member[r]))
            num = num_r.to(acc) if num is None else num.add_(num_r)
            den = den_r.to(acc) if den is None else den.add_(den_r)
        tokens = attn.attend_slices(num, den)  # (H, B * G, d)
        for r in rows:  # pass 2: chunk r reads only its own rows, not yet overwritten, and the tokens
            xc = x[r]
            xc = xc + attn.deslice(attn.slice_weights(self.norm1(xc), member[r]), tokens.to(xc.dtype))
            x[r] = xc + self.mlp(self.norm2(xc))
        return x


class TransolverBackbone(nn.Module):
    """Transolver on packed clouds: ``embed`` then ``forward`` (the module docstring).

    Args:
        config: the ``model:`` section (width, num_heads, depth, mlp_ratio, ``transolver.slices``).
        in_features: per-point input channels F, the coordinates first.
    """

    def __init__(self, config: ModelConfig, in_features: int) -> None:
        super().__init__()
        dim = config.width
        self.checkpointing = config.checkpointing
        self.preprocess = Mlp(in_features, 2 * dim, dim)
        self.blocks = nn.ModuleList(TransolverBlock(config) for _ in range(config.depth))
        self.apply(init_weights)
        for block in self.blocks:
            nn.init.orthogonal_(block.attn.in_project_slice.weight)
        self.placeholder = nn.Parameter(torch.rand(dim) / dim)  # p

    def embed(self, features: Tensor) -> Tensor:
        """(N, F) -> (N, C): x_0 = MLP(f_i) + p, every row alone (also for query points)."""
        return self.preprocess(features) + self.placeholder

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        layout: PatchLayout,
        trees: AnchorTrees = ONE_TREE,
        *,
        chunk_points: int | None = None,
    ) -> Tensor:
        """(N, C) embedded points of the packed clouds of ``layout`` -> (N, C) features, same rows.

        ``positions`` and ``trees`` are not read (module docstring). ``chunk_points``: run every block in
        row chunks of at most this many points, under ``torch.no_grad()`` only; ``x`` is then overwritten.
        """
        n = x.shape[0]
        if not torch.jit.is_tracing() and n != layout.num_points:  # traced: both are the same graph value
            raise ValueError(f"x has {n} rows but the layout has {layout.num_points} points")
        cloud = point_cloud(layout.whole, layout.patch_len)  # (N,)
        clouds = torch.arange(layout.sub_index.shape[0], device=cloud.device)  # (B,)
        member = (cloud[:, None] == clouds[None, :]).to(x.dtype)  # (N, B) one-hot
        if chunk_points is not None and chunk_points < n:
            return self._stream(x, member, chunk_points)
        for block in self.blocks:
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, member, use_reentrant=False)
            else:
                x = block(x, member)
        return x

    def _stream(self, x: Tensor, member: Tensor, chunk_points: int) -> Tensor:
        if chunk_points < 1:
            raise ValueError(f"chunk_points must be positive, got {chunk_points}")
        if torch.is_grad_enabled():
            raise ValueError("a forward pass in chunks updates features in place: run it under torch.no_grad()")
        n = x.shape[0]
        rows = [slice(r, min(r + chunk_points, n)) for r in range(0, n, chunk_points)]
        for block in self.blocks:
            block.stream(x, member, rows)
        return x
