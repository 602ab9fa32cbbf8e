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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchChunk, PatchLayout
from msptcli.model.pmsa import PMSA, SupernodePool


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, dim_hidden)
        self.fc2 = nn.Linear(dim_hidden, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


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

    def forward(
        self, x: Tensor, layout: PatchLayout, z: Tensor | None = None, chunks: Sequence[PatchChunk] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """The block on points ``x`` (N, C) and, with carried supernodes, on ``z`` (P * Q, C).

        ``chunks``: runs of whole patches to process one after the other (default: all at once).
        With several chunks ``x`` and ``z`` are updated in place (inference only).
        """
        chunks = [layout.whole] if chunks is None else chunks
        q = self.num_supernodes  # Q supernodes per patch

        def subs(ch: PatchChunk) -> slice:
            return slice(ch.p0 * q, ch.p1 * q)

        # Eq. 4: the supernodes of every patch, from this block's input (a sub-run never crosses a patch).
        if self.carried:
            s = self.norm1(z)  # (P * Q, C)
        else:
            s = over_chunks(chunks, subs, lambda ch: self.pool(self.norm1(x[_points(ch)]), ch.sub_slots, ch.sub_count))
        sn_kv = self.attn.supernode_kv(s, layout)  # 2 x (B, S, C)

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

    def query_update(self, xq: Tensor, x: Tensor, layout: PatchLayout, z: Tensor | None, groups) -> Tensor:  # type: ignore[no-untyped-def]
        """The block on query points ``xq`` (M, C) that read the anchors ``x`` (N, C), this block's input, and
        ``z``, its carried supernodes, without changing them (``model/queries.py``)."""
        whole = layout.whole
        s = self.norm1(z) if self.carried else self.pool(self.norm1(x), whole.sub_slots, whole.sub_count)  # Eq. 4
        sn_kv = self.attn.supernode_kv(s, layout)
        xq = xq + self.attn.attend_queries(self.norm1(xq), self.norm1(x), whole, sn_kv, groups)
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
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be positive, got {in_features}, {out_features}")
        self.config = config
        self.in_features, self.out_features = in_features, out_features
        dim = config.width
        self.embed = Mlp(in_features, dim, dim)
        self.carried_pool = SupernodePool(dim, config.pooling) if config.supernodes == "carried" else None
        self.blocks = nn.ModuleList(MSPTBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self.apply(_init_weights)

    def forward(self, features: Tensor, layout: PatchLayout, *, chunk_points: int | None = None) -> Tensor:
        """(N, F) packed features -> (N, out_features) predictions, in the same (tree) order.

        ``chunk_points``: run in chunks of whole patches of at most this many points (at least one
        patch each), to bound memory on large meshes; only without autograd (``torch.no_grad()``).
        """
        n = layout.num_points
        if not torch.jit.is_tracing() and features.shape[0] != n:  # traced: both are the same graph value
            raise ValueError(f"features have {features.shape[0]} rows but the layout has {n} points")
        chunks = [layout.whole] if chunk_points is None else list(layout.chunks(chunk_points))
        if len(chunks) > 1 and torch.is_grad_enabled():
            raise ValueError("a forward pass in chunks updates features in place: run it under torch.no_grad()")
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

    def forward_queries(
        self, features: Tensor, layout: PatchLayout, query_features: Tensor, groups
    ) -> tuple[Tensor, Tensor]:  # type: ignore[no-untyped-def]
        """Anchors (N, F) in tree order run the blocks as in :meth:`forward`; queries (M, F), grouped by the
        anchor patch they fall into (``model/queries.py``), read them block by block.

        Returns:
            (N, out_features) outputs of the anchors (tree order) and (M, out_features) of the queries.
        """
        x = self.embed(features)  # (N, C)
        xq = self.embed(query_features)  # (M, C)
        whole = layout.whole
        z = None if self.carried_pool is None else self.carried_pool(x, whole.sub_slots, whole.sub_count)
        for block in self.blocks:
            xq = block.query_update(xq, x, layout, z, groups)  # reads the block's input
            x, z = block(x, layout, z)
        return self.head(self.norm(x)), self.head(self.norm(xq))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
