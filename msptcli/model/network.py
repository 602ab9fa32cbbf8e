"""One network for every backbone: MSPT, Erwin, Erwin-NSA or Transolver, behind the same calls.

``build_network(config, in_features=, out_features=)`` gives :class:`~msptcli.model.mspt.MSPT` for
``backbone: mspt`` and otherwise a :class:`BackboneNetwork` around one of ``model/backbones/`` (the
:class:`~msptcli.model.backbones.Backbone` interface):

    x_0 = Embed(f_i)                    the backbone's own point-wise embedding
    h   = Backbone(x_0)                 its mixing of the points (ball attention, slices, ...)
    y_i = Head(LN(h_i))                 the Linear head shared by all backbones

With anchors (the default: ``model.anchors``) the backbone runs on the anchors only, and every
mesh point is a query that reads the anchors' final features ``h`` in ``query_depth`` blocks of
the same reading MSPT's queries use (``MSPTBlock.query_update``: its nearest anchor's patch, or
its k nearest anchors, and all supernodes of its cloud, in one softmax; ``model/queries.py``):

    x_q   = Embed(f_q)
    x_q  <- x_q + Attn(LN(x_q), keys and values of LN(h) in block r)  + MLP,   r = 1 .. query_depth
    y_q   = Head(LN(x_q))

A query never sees another query, so every backbone gets the geometry-only guarantee of the anchor
design: a prediction depends on the geometry and the point asked about alone. (MSPT's queries read
the anchors at the input of every one of its blocks, with the blocks' own weights; the other
backbones have no such per-block keys, hence the separate reading blocks.)

Every network has the same calls: ``forward(features, layout, *, chunk_points, queries, trees)``,
``read_anchors`` and ``answer_queries`` (inference, validation and export use only these).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.backbones import Backbone, build_backbone
from msptcli.model.config import ModelConfig
from msptcli.model.layers import channels, gather_rows, init_weights
from msptcli.model.layout import PatchLayout
from msptcli.model.mspt import MSPT, AnchorKeys, MSPTBlock
from msptcli.model.queries import Queries
from msptcli.model.spacetime import SpaceTimeMSPT, TimeLevels

#: The coordinates among the input features: the first three (``data/features.py``).
POSITIONS = slice(0, 3)


class BackboneNetwork(nn.Module):
    """Embedding -> backbone -> head, and with anchors the shared query reading (module docstring).

    Args:
        config: the ``model:`` section; ``config.backbone`` is not ``mspt``.
        in_features: per-point input channels F (from the prepared data).
        out_features: predicted channels per point.
    """

    def __init__(self, config: ModelConfig, *, in_features: int, out_features: int) -> None:
        super().__init__()
        self.config = config
        self.in_features, self.out_features = channels(in_features, out_features)
        self.backbone: Backbone = build_backbone(config, in_features)
        self.readers = None
        if config.anchors is not None:
            self.readers = nn.ModuleList(MSPTBlock(config) for _ in range(config.query_depth))
            self.readers.apply(init_weights)
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, out_features)
        init_weights(self.head)

    def forward(
        self,
        features: Tensor,
        layout: PatchLayout,
        *,
        chunk_points: int | None = None,
        queries: Queries | None = None,
        trees: AnchorTrees = ONE_TREE,
    ) -> Tensor:
        """(N, F) packed features -> (N, out_features) predictions (or, with ``queries``, the queries' (M, out))."""
        if queries is not None:
            keys, _ = self.read_anchors(features, layout, trees)
            return self.answer_queries(keys, layout, queries)
        x = self.backbone.embed(features)  # (N, C)
        h = self.backbone(x, features[:, POSITIONS], layout, trees, chunk_points=chunk_points)  # (N, C)
        return self.head(self.norm(h))  # (N, out_features)

    def read_anchors(
        self, features: Tensor, layout: PatchLayout, trees: AnchorTrees = ONE_TREE, *, outputs: bool = False
    ) -> tuple[list[AnchorKeys], Tensor | None]:
        """Run the anchors (N, F), packed in the first tree's order, through the backbone and keep, for every
        reading block, the keys and values of its final features ``h`` (block r cuts them into the patches of
        tree ``r % trees.count``). With ``outputs`` also the anchors' own (N, out_features) predictions."""
        if self.readers is None:
            raise ValueError("this network has no anchors (model.anchors is null): call it on the points")
        h = self.backbone(self.backbone.embed(features), features[:, POSITIONS], layout, trees)  # (N, C)
        nearest = self.config.anchors.reads == "nearest"
        keys = []
        for index, block in enumerate(self.readers):
            tree = index % trees.count
            reorder = trees.reorder[tree]
            ht = h if reorder is None else gather_rows(h, reorder)  # (N, C) in this tree's order
            keys.append(block.anchor_keys(h, ht, layout, tree, nearest=nearest))
        return keys, (self.head(self.norm(h)) if outputs else None)

    def answer_queries(self, keys: Sequence[AnchorKeys], layout: PatchLayout, queries: Queries) -> Tensor:
        """(M, F) query features -> (M, out_features) predictions, reading the anchors' ``keys``."""
        xq = self.backbone.embed(queries.features)  # (M, C)
        for block, k in zip(self.readers, keys, strict=True):
            xq = block.query_update(xq, k, layout, queries)
        return self.head(self.norm(xq))


#: Any of the networks (what training, inference, checkpoints and export take).
Network = MSPT | BackboneNetwork | SpaceTimeMSPT


def build_network(
    config: ModelConfig, *, in_features: int, out_features: int, levels: TimeLevels | None = None
) -> Network:
    """The network of ``config.backbone`` with fresh weights. ``levels``: the time levels of a transient step's
    inputs (``data.transient.step_columns(...).time_levels()``), which ``time_axis: attention`` needs."""
    if config.time_axis == "attention":
        if levels is None:
            raise ValueError("model.time_axis: attention needs the time levels of a transient step's inputs")
        return SpaceTimeMSPT(config, in_features=in_features, out_features=out_features, levels=levels)
    if config.backbone == "mspt":
        return MSPT(config, in_features=in_features, out_features=out_features)
    return BackboneNetwork(config, in_features=in_features, out_features=out_features)
