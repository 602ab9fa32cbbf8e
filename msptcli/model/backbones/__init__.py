"""The backbones other than MSPT, behind one interface: Erwin, Erwin-NSA and Transolver.

A backbone mixes the points of packed clouds (``model/layout.py``); ``model/network.py``'s ``BackboneNetwork``
puts the shared head after it and, with anchors, the query reading. It is an ``nn.Module`` with
the two calls of :class:`Backbone`:

    embed(features)                                  (N, F) -> (N, C)  every row alone (query points too)
    forward(x, positions, layout, trees, *, chunk_points=None)
                                                     (N, C) -> (N, C)  the same rows, in tree order

    x             (N, C)  float   embedded points of all clouds, packed in the first tree's order
    positions     (N, 3)  float   their coordinates (the first three input features), no gradient needed
    layout        PatchLayout     the clouds' sizes, patches and supernodes
    trees         AnchorTrees     the rows in every ball tree's order (``ONE_TREE``: the first only)
    chunk_points  int | None      streaming chunk size under ``torch.no_grad()``; a backbone may ignore it

A new backbone is a module here with a class of these two calls, its settings in a block of
``model/config.py`` and a line in :func:`build_backbone`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.backbones.erwin import ErwinBackbone
from msptcli.model.backbones.nsa import NSABackbone
from msptcli.model.backbones.transolver import TransolverBackbone
from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchLayout


@runtime_checkable
class Backbone(Protocol):
    """What ``BackboneNetwork`` calls of a backbone (the module docstring gives the shapes)."""

    def embed(self, features: Tensor) -> Tensor:
        """(N, F) input features -> (N, C), every row alone."""
        ...

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        layout: PatchLayout,
        trees: AnchorTrees = ONE_TREE,
        *,
        chunk_points: int | None = None,
    ) -> Tensor:
        """(N, C) embedded points -> (N, C) mixed features, the same rows."""
        ...


#: The backbone class of every ``model.backbone`` but ``mspt``.
BACKBONES: dict[str, type[nn.Module]] = {
    "erwin": ErwinBackbone,
    "erwin-nsa": NSABackbone,
    "transolver": TransolverBackbone,
}


def build_backbone(config: ModelConfig, in_features: int) -> Backbone:
    """The backbone ``config.backbone`` with fresh weights, for ``in_features`` input channels."""
    if config.backbone not in BACKBONES:
        raise ValueError(f"no backbone module for {config.backbone!r}")
    return BACKBONES[config.backbone](config, in_features)
