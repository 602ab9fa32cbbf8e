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

With anchors (``model.anchors``) the blocks run on the anchors and the mesh points are queries that
read them (``model/queries.py``): at the input of every block, with its weights
(``query_reading: blocks``), or the anchors' final features in ``query_depth`` reading blocks of
their own (``query_reading: final``, ``self.readers``):

    h     = Blocks(Embed(f_a))                        the anchors through all L blocks
    x_q  <- x_q + PMSA_r(LN(x_q); keys of LN(h)) + MLP_r(...),   r = 1 .. query_depth

``anchor_blocks: E`` puts E blocks of the anchors' own before the L blocks the queries read, so that a
query's first reading meets features mixed by E blocks instead of the embedding (reading every block):

    h_0 = Blocks_E(Embed(f_a)),   then as above with h_0 for Embed(f_a)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.config import ModelConfig
from msptcli.model.layers import (
    Embedding,
    Mlp,
    channels,
    gather_rows,
    init_weights,
    over_chunks,
    point_chunks,
    point_rows,
    supernode_rows,
)
from msptcli.model.layout import PatchChunk, PatchLayout
from msptcli.model.pmsa import PMSA, SupernodePool
from msptcli.model.queries import Queries


class MSPTBlock(nn.Module):
    """One pre-norm block: PMSA with residual, then an MLP with residual (Eq. 7)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.width
        self.num_supernodes = config.num_supernodes
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), dim)
        self.pool = SupernodePool(dim, config.pooling)
        self.attn = PMSA(dim, config.num_heads)

    def supernode_keys(
        self, x: Tensor, layout: PatchLayout, chunks: Sequence[PatchChunk] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Eq. 4: keys and values 2 x (B, S, C) of the supernodes of every patch, from this block's input."""
        chunks = [layout.whole] if chunks is None else chunks
        s = over_chunks(  # (P * Q, C): a sub-run never crosses a patch
            chunks,
            lambda ch: supernode_rows(ch, self.num_supernodes),
            lambda ch: self.pool(self.norm1(x[point_rows(ch)]), ch.sub_slots, ch.sub_count),
        )
        return self.attn.supernode_kv(s, layout)

    def forward(
        self,
        x: Tensor,
        layout: PatchLayout,
        chunks: Sequence[PatchChunk] | None = None,
        sn_kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """The block on points ``x`` (N, C) -> (N, C).

        ``chunks``: runs of whole patches to process one after the other (default: all at once).
        With several chunks ``x`` is updated in place (inference only). ``sn_kv``: the block's
        supernode keys, when the caller has them already (``supernode_keys``).
        """
        chunks = [layout.whole] if chunks is None else chunks
        if sn_kv is None:
            sn_kv = self.supernode_keys(x, layout, chunks)  # 2 x (B, S, C)

        # Eq. 5-7: every point attends to its patch and all supernodes of its cloud.
        def update(ch: PatchChunk) -> Tensor:
            xc = x[point_rows(ch)]
            xc = xc + self.attn(self.norm1(xc), ch, sn_kv)
            return xc + self.mlp(self.norm2(xc))

        if len(chunks) == 1:
            return update(chunks[0])
        for ch in chunks:
            x[point_rows(ch)] = update(ch)  # in place: later chunks read only their own rows and sn_kv
        return x

    def anchor_keys(self, x: Tensor, xt: Tensor, layout: PatchLayout, tree: int, *, nearest: bool) -> AnchorKeys:
        """What queries read of anchors ``x`` (N, C, packed rows) in this block, ``xt`` the same rows in tree
        ``tree``'s order: the supernode keys and, with ``nearest``, every anchor's keys (N, 2C, packed rows),
        else the keys of the tree's patches (P, L, 2C)."""
        sn_kv = self.supernode_keys(xt, layout)
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
            o = self.attn.attend_queries(h, keys.kv, layout.whole, keys.sn_kv, queries.groups[keys.tree])  # (M, C)
            if queries.blend is not None:  # reads: blend: the second patch of the queries near a boundary
                b = queries.blend
                o2 = self.attn.attend_queries(h[b.rows], keys.kv, layout.whole, keys.sn_kv, b.groups)  # (m2, C)
                w = b.weight[:, None].to(o.dtype)  # (m2, 1) w_2 in [0, 1]
                o = o.index_copy(0, b.rows, (o[b.rows] + w * o2) / (1 + w))
            xq = xq + o
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
        self.blocks = nn.ModuleList(MSPTBlock(config) for _ in range(config.depth))
        # query_reading: final: the queries' own reading blocks over the anchors' final features
        self.readers = nn.ModuleList(MSPTBlock(config) for _ in range(config.query_depth if config.reads_final else 0))
        # anchor_blocks: the anchors' own blocks before the ones the queries read
        self.anchor_blocks = nn.ModuleList(MSPTBlock(config) for _ in range(config.anchor_blocks))
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
        x = over_chunks(chunks, point_rows, lambda ch: self.embed(features[point_rows(ch)]))  # (N, C)
        for block in [*self.anchor_blocks, *self.blocks]:
            if self.config.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, layout, use_reentrant=False)
            else:
                x = block(x, layout, chunks)
        return over_chunks(chunks, point_rows, lambda ch: self.head(self.norm(x[point_rows(ch)])))  # (N, out)

    def read_anchors(
        self, features: Tensor, layout: PatchLayout, trees: AnchorTrees = ONE_TREE, *, outputs: bool = False
    ) -> tuple[list[AnchorKeys], Tensor | None]:
        """Run the anchors (N, F), packed in the first tree's order, through the blocks and keep what queries
        read: the anchors' keys and values (:class:`AnchorKeys`) at the input of every block, or with
        ``query_reading: final`` those of the anchors' final features in every reading block.

        Block l (reading block r) cuts the anchors into the patches of tree ``l % trees.count``
        (``r % trees.count``), l counting the ``anchor_blocks`` first. Reading every block, the last block's
        update of the anchors is run only for ``outputs`` (queries never read it).

        Returns:
            The keys of every block (reading block) and, with ``outputs``, the anchors' (N, out_features) predictions.
        """
        x = self.embed(features)  # (N, C)
        nearest = self.config.anchors is not None and self.config.anchors.reads == "nearest"
        final = bool(self.readers)
        keys = []
        own = len(self.anchor_blocks)  # anchor_blocks: read by no query
        for index, block in enumerate([*self.anchor_blocks, *self.blocks]):
            tree = index % trees.count
            reorder, restore = trees.reorder[tree], trees.restore[tree]
            xt = x if reorder is None else gather_rows(x, reorder)  # (N, C) in this tree's order
            sn_kv = None
            if not final and index >= own:
                keys.append(block.anchor_keys(x, xt, layout, tree, nearest=nearest))
                sn_kv = keys[-1].sn_kv
                if index == own + len(self.blocks) - 1 and not outputs:
                    break
            if self.config.checkpointing and torch.is_grad_enabled():
                xt = checkpoint(block, xt, layout, None, sn_kv, use_reentrant=False)
            else:
                xt = block(xt, layout, sn_kv=sn_kv)
            x = xt if restore is None else gather_rows(xt, restore)
        for index, reader in enumerate(self.readers):  # query_reading: final
            tree = index % trees.count
            reorder = trees.reorder[tree]
            xt = x if reorder is None else gather_rows(x, reorder)
            keys.append(reader.anchor_keys(x, xt, layout, tree, nearest=nearest))
        return keys, (self.head(self.norm(x)) if outputs else None)

    def answer_queries(self, keys: Sequence[AnchorKeys], layout: PatchLayout, queries: Queries) -> Tensor:
        """(M, F) query features -> (M, out_features) predictions, reading the anchors' ``keys`` block by block
        (reading block by reading block)."""
        xq = self.embed(queries.features)  # (M, C)
        for block, k in zip(self.readers or self.blocks, keys, strict=True):
            xq = block.query_update(xq, k, layout, queries)
        return self.head(self.norm(xq))


@dataclass(frozen=True)
class AnchorKeys:
    """What queries read of the anchors in one block: keys/values of the patches (P, L, 2C) or, with
    ``reads: nearest``, of every anchor (N, 2C, packed rows), and the supernode keys."""

    kv: Tensor
    sn_kv: tuple[Tensor, Tensor]
    tree: int
