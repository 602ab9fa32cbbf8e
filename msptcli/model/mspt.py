"""The Multi-Scale Patch Transformer: embedding, a stack of MSPT blocks, a point-wise head.

Inputs are packed (see ``layout.py``): ``features`` (N, F) for the points of
all clouds in ball-tree order and a ``PatchLayout`` built once per batch.

    x_0     = Embed(f_i)                                  point-wise MLP
    x_l+1   = x_l' + MLP(LN(x_l')),
    x_l'    = x_l + PMSA(LN(x_l))                         (Eq. 4-7, pre-norm)
    y_i     = Head(LN(x_L))                               one output per target channel

There is one forward pass. Within a block a point needs only its own patch and the
supernodes of its cloud, and the supernodes depend on the block's input alone, so the
same code runs on all patches at once (training, export) or, for inference on large
meshes, on chunks of whole patches one after the other (``chunk_points``): each block
first pools the supernodes of every chunk, then updates the points chunk by chunk in
place. Peak memory is then one (N, C) buffer plus one chunk's temporaries, whatever the
depth, and the result equals the all-at-once pass up to floating-point reordering.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchChunk, PatchLayout
from msptcli.model.pmsa import PMSA, SupernodePool, gather_rows
from msptcli.model.queries import ONE_TREE, AnchorTrees, Queries


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


def _points(chunk: PatchChunk) -> slice:
    return slice(chunk.n0, chunk.n1)


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


class MSPTBlock(nn.Module):
    """One pre-norm block: PMSA with residual, then an MLP with residual (Eq. 7)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.width
        self.num_supernodes = config.num_supernodes
        self.carried = config.supernodes == "carried"
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), dim)
        # Carried supernodes are pooled once, before the first block (MSPT.carried_pool).
        self.pool = None if self.carried else SupernodePool(dim, config.pooling)
        self.attn = PMSA(dim, config.num_heads, carried=self.carried)

    def supernode_keys(
        self, x: Tensor, layout: PatchLayout, z: Tensor | None = None, chunks: Sequence[PatchChunk] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Eq. 4: keys and values 2 x (B, S, C) of the supernodes of every patch, from this block's input."""
        chunks = [layout.whole] if chunks is None else chunks
        q = self.num_supernodes  # Q supernodes per patch
        if self.carried:
            s = self.norm1(z)  # (P * Q, C)
        else:  # a sub-run never crosses a patch
            s = over_chunks(
                chunks,
                lambda ch: slice(ch.p0 * q, ch.p1 * q),
                lambda ch: self.pool(self.norm1(x[_points(ch)]), ch.sub_slots, ch.sub_count),
            )
        return self.attn.supernode_kv(s, layout)

    def forward(
        self,
        x: Tensor,
        layout: PatchLayout,
        z: Tensor | None = None,
        chunks: Sequence[PatchChunk] | None = None,
        sn_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """The block on points ``x`` (N, C) and, with carried supernodes, on ``z`` (P * Q, C).

        ``chunks``: runs of whole patches to process one after the other (default: all at once).
        With several chunks ``x`` and ``z`` are updated in place (inference only). ``sn_kv``: the
        block's supernode keys, when the caller has them already (``supernode_keys``).
        """
        chunks = [layout.whole] if chunks is None else chunks
        q = self.num_supernodes  # Q supernodes per patch

        def subs(ch: PatchChunk) -> slice:
            return slice(ch.p0 * q, ch.p1 * q)

        if sn_kv is None:
            sn_kv = self.supernode_keys(x, layout, z, chunks)  # 2 x (B, S, C)

        # Eq. 5-7: every point attends to its patch and all supernodes of its cloud.
        def update(ch: PatchChunk) -> tuple[Tensor, Tensor | None]:
            xc = x[_points(ch)]
            zc = z[subs(ch)] if self.carried else None
            a, az = self.attn(self.norm1(xc), ch, sn_kv, self.norm1(zc) if self.carried else None)
            xc = xc + a
            xc = xc + self.mlp(self.norm2(xc))
            if self.carried:
                zc = zc + az
                zc = zc + self.mlp(self.norm2(zc))
            return xc, zc

        if len(chunks) == 1:
            return update(chunks[0])
        z_next = torch.empty_like(z) if self.carried else None
        for ch in chunks:
            xc, zc = update(ch)
            x[_points(ch)] = xc  # in place: later chunks read only their own rows and sn_kv
            if self.carried:
                z_next[subs(ch)] = zc
        return x, z_next

    def anchor_keys(
        self, x: Tensor, xt: Tensor, layout: PatchLayout, tree: int, *, nearest: bool, z: Tensor | None = None
    ) -> AnchorKeys:
        """What queries read of anchors ``x`` (N, C, packed rows) in this block, ``xt`` the same rows in tree
        ``tree``'s order: the supernode keys and, with ``nearest``, every anchor's keys (N, 2C, packed rows),
        else the keys of the tree's patches (P, L, 2C)."""
        sn_kv = self.supernode_keys(xt, layout, z)
        kv = self.attn.point_kv(self.norm1(x)) if nearest else self.attn.patch_kv(self.norm1(xt), layout.whole)
        return AnchorKeys(kv, sn_kv, tree)

    def query_update(self, xq: Tensor, keys: AnchorKeys, layout: PatchLayout, queries: Queries) -> Tensor:
        """The block on query points ``xq`` (M, C) that read the anchors' ``keys`` at this block's input
        (their patch keys, or with ``reads: nearest`` their nearest anchors' keys, and the supernodes),
        without changing them (``model/queries.py``)."""
        h = self.norm1(xq)
        if queries.nearest is not None:
            xq = xq + self.attn.attend_nearest(h, keys.kv, layout.whole, keys.sn_kv, queries.nearest)
        else:
            xq = xq + self.attn.attend_queries(h, keys.kv, layout.whole, keys.sn_kv, queries.groups[keys.tree])
        return xq + self.mlp(self.norm2(xq))


class MSPT(nn.Module):
    """The Multi-Scale Patch Transformer (see the module docstring).

    Args:
        config: the network's sizes and variants (the ``model:`` config section).
        in_features: per-point input channels F (from the prepared data).
        out_features: predicted channels per point.
    """

    def __init__(self, config: ModelConfig, *, in_features: int, out_features: int) -> None:
        super().__init__()
        self.config = config
        self.in_features, self.out_features = channels(in_features, out_features)
        dim = config.width
        self.embed = Embedding(in_features, dim, config.fourier_features)
        self.carried_pool = SupernodePool(dim, config.pooling) if config.supernodes == "carried" else None
        self.blocks = nn.ModuleList(MSPTBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self.apply(init_weights)

    def forward(
        self,
        features: Tensor,
        layout: PatchLayout,
        *,
        chunk_points: int | None = None,
        queries: Queries | None = None,
        trees: AnchorTrees = ONE_TREE,
    ) -> Tensor:
        """(N, F) packed features -> (N, out_features) predictions, in the same (tree) order.

        ``chunk_points``: run in chunks of whole patches of at most this many points (at least one
        patch each), to bound memory on large meshes; only without autograd (``torch.no_grad()``).
        ``queries``: anchor-query MSPT: ``features`` are anchors (with their ``trees``) and the result
        is the (M, out_features) predictions of the queries (:meth:`read_anchors`, :meth:`answer_queries`).
        """
        if queries is not None:
            keys, _ = self.read_anchors(features, layout, trees)
            return self.answer_queries(keys, layout, queries)
        chunks = point_chunks(features, layout, chunk_points)
        q = self.config.num_supernodes  # Q supernodes per patch
        x = over_chunks(chunks, _points, lambda ch: self.embed(features[_points(ch)]))  # (N, C)
        z = None
        if self.carried_pool is not None:  # (P * Q, C)
            z = over_chunks(
                chunks,
                lambda ch: slice(ch.p0 * q, ch.p1 * q),
                lambda ch: self.carried_pool(x[_points(ch)], ch.sub_slots, ch.sub_count),
            )
        for block in self.blocks:
            if self.config.checkpointing and torch.is_grad_enabled():
                x, z = checkpoint(block, x, layout, z, use_reentrant=False)
            else:
                x, z = block(x, layout, z, chunks)
        return over_chunks(chunks, _points, lambda ch: self.head(self.norm(x[_points(ch)])))  # (N, out_features)

    def read_anchors(
        self, features: Tensor, layout: PatchLayout, trees: AnchorTrees = ONE_TREE, *, outputs: bool = False
    ) -> tuple[list[AnchorKeys], Tensor | None]:
        """Run the anchors (N, F), packed in the first tree's order, through the blocks and keep, per block,
        what queries read: the anchors' keys and values (:class:`AnchorKeys`) at the block's input.

        Block l cuts the anchors into the patches of tree ``l % trees.count``. The last block's update of
        the anchors is run only for ``outputs`` (queries never read it).

        Returns:
            The keys of every block and, with ``outputs``, the anchors' (N, out_features) predictions.
        """
        x = self.embed(features)  # (N, C)
        whole = layout.whole
        nearest = self.config.anchors is not None and self.config.anchors.reads == "nearest"
        z = None if self.carried_pool is None else self.carried_pool(x, whole.sub_slots, whole.sub_count)
        keys = []
        for index, block in enumerate(self.blocks):
            tree = index % trees.count
            reorder, restore = trees.reorder[tree], trees.restore[tree]
            xt = x if reorder is None else gather_rows(x, reorder)  # (N, C) in this tree's order
            keys.append(block.anchor_keys(x, xt, layout, tree, nearest=nearest, z=z))
            sn_kv = keys[-1].sn_kv
            if index == len(self.blocks) - 1 and not outputs:
                break
            if self.config.checkpointing and torch.is_grad_enabled():
                xt, z = checkpoint(block, xt, layout, z, None, sn_kv, use_reentrant=False)
            else:
                xt, z = block(xt, layout, z, sn_kv=sn_kv)
            x = xt if restore is None else gather_rows(xt, restore)
        return keys, (self.head(self.norm(x)) if outputs else None)

    def answer_queries(self, keys: Sequence[AnchorKeys], layout: PatchLayout, queries: Queries) -> Tensor:
        """(M, F) query features -> (M, out_features) predictions, reading the anchors' ``keys`` block by block."""
        xq = self.embed(queries.features)  # (M, C)
        for block, k in zip(self.blocks, keys, strict=True):
            xq = block.query_update(xq, k, layout, queries)
        return self.head(self.norm(xq))


@dataclass(frozen=True)
class AnchorKeys:
    """What queries read of the anchors in one block: keys/values of the patches (P, L, 2C) or, with
    ``reads: nearest``, of every anchor (N, 2C, packed rows), and the supernode keys."""

    kv: Tensor
    sn_kv: tuple[Tensor, Tensor]
    tree: int


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
