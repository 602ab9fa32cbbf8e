"""The one validated configuration of an MSPT network: the ``model:`` section of every config.

Every constraint of the network is checked here, when a config is loaded, so a bad
value is one line naming the key (``model.width: 100 is not divisible by num_heads 8``)
and never a failure while the network is built. The numbers of input and output
channels are not part of it: they follow from the prepared data and are given to
:class:`~msptcli.model.mspt.MSPT` beside the config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from msptcli.geometry.patches import patch_level

#: Option values renamed since the first checkpoint format: old name -> new name.
RENAMED = {"pooling": {"linear": "softmax"}, "supernodes": {"stream": "carried"}}


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


class AnchorConfig(BaseModel):
    """The anchors that carry the geometry in anchor-query MSPT (``model/queries.py``, docs/model.md).

    Anchors are drawn from the geometry alone: ``surface`` points area-weighted from the faces and
    ``volume`` points from the training volume distribution around the body. Each set is
    *stratified*: ``candidates`` times as many random candidates are ordered by their ball tree and
    cut into runs, and each run gives the candidate nearest its centroid, so two draws (another
    seed, another tessellation of the body) give nearly the same anchors; ``candidates: 1`` keeps
    the random draw as it is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    surface: int = Field(4096, ge=1, le=1 << 17, description="surface anchors, a power of two (at most 131072)")
    volume: int = Field(4096, ge=0, description="volume anchors, a power of two or 0")
    candidates: int = Field(32, ge=1, le=1024, description="random candidates per anchor of the stratified draw")
    seed: int = Field(0, description="seed of the anchors drawn by predict and validation")
    reads: Literal["patch", "nearest"] = Field(
        "patch",
        description="what a query attends to besides the supernodes: 'patch', the anchors of its nearest anchor's "
        "ball-tree patch; 'nearest', its `neighbours` nearest anchors under a window that falls smoothly to zero "
        "at the next one (predictions continuous in space: no patch boundaries in the fields)",
    )
    neighbours: int = Field(16, ge=1, le=1024, description="anchors a query reads with reads: nearest")
    draws: int = Field(
        1,
        ge=1,
        le=64,
        description="predict and validation average the outputs of this many anchor draws "
        "(seeds seed, seed + 1, ...): less dependence on the draw, at that many times the cost",
    )

    @model_validator(mode="after")
    def _check(self) -> AnchorConfig:
        for name in ("surface", "volume"):
            n = getattr(self, name)
            if n and not _is_power_of_two(n):
                raise ValueError(f"anchors.{name} must be a power of two (runs of the ball tree), got {n}")
        if self.reads == "nearest" and self.neighbours >= self.surface + self.volume:
            total = self.surface + self.volume
            raise ValueError(f"anchors.neighbours {self.neighbours} must be below the number of anchors, {total}")
        return self


class ModelConfig(BaseModel):
    """Sizes and variants of an MSPT network. Saved inside every checkpoint.

    Patches: a cloud of N points is cut into ``K = 2**level`` runs of its ball-tree
    order. By default ``K * Q ~ sqrt(N)`` (the paper's rule); ``patch_size`` asks
    for patches of about that many points instead, ``num_patches`` fixes K.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    width: int = Field(128, ge=1, description="channels C of the point features")
    num_heads: int = Field(8, ge=1, description="attention heads; must divide width")
    depth: int = Field(4, ge=1, description="number of MSPT blocks")
    mlp_ratio: float = Field(4.0, gt=0, description="hidden width of each block's MLP, as a multiple of width")
    patch_size: int | None = Field(None, ge=1, description="target points per patch L (K = 2^level closest to N/L)")
    num_patches: int | None = Field(None, ge=1, description="fixed K, a power of two (capped by the cloud size)")
    num_supernodes: int = Field(1, ge=1, description="Q supernodes pooled per patch, a power of two")
    pooling: Literal["mean", "max", "softmax"] = Field(
        "mean",
        description="how a sub-run becomes a supernode (Eq. 4): its mean, its channel-wise max, or a "
        "softmax-weighted mean with a learned score per point",
    )
    supernodes: Literal["keys", "carried"] = Field(
        "keys",
        description="'keys': every block pools supernodes from its input, as keys and values only (the paper); "
        "'carried': pooled once before the first block and carried as a residual stream from block to block, "
        "each patch's own supernodes also attending (an mspt variant)",
    )
    fourier_features: int = Field(
        0,
        ge=0,
        le=16,
        description="octaves of sin/cos features of the coordinates (the first three inputs) fed "
        "to the embedding beside the inputs; 0: none",
    )
    anchors: AnchorConfig | None = Field(
        default_factory=AnchorConfig,
        description="anchor-query MSPT: the blocks run on anchors drawn from the geometry and every mesh point is "
        "a query that reads them (a prediction depends on the geometry and the point alone); null: every point "
        "of the cloud runs the blocks (the paper's MSPT)",
    )
    rotate_trees: bool = Field(
        False,
        description="odd blocks cut the anchors into the patches of a rotated ball tree (Erwin), so that patch "
        "boundaries move from block to block; needs anchors and supernodes: keys",
    )
    checkpointing: bool = Field(False, description="recompute each block in the backward pass to save memory")

    @field_validator("pooling", "supernodes", mode="before")
    @classmethod
    def _renamed(cls, value: object, info) -> object:  # type: ignore[no-untyped-def]
        new = RENAMED[info.field_name].get(value) if isinstance(value, str) else None
        if new is not None:
            raise ValueError(f"'{value}' is now called '{new}'")
        return value

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if not _is_power_of_two(self.num_supernodes):
            raise ValueError(f"num_supernodes must be a power of two (subtrees of a patch), got {self.num_supernodes}")
        if self.num_patches is not None and not _is_power_of_two(self.num_patches):
            raise ValueError(f"num_patches must be a power of two (a level of the ball tree), got {self.num_patches}")
        if self.num_patches is not None and self.patch_size is not None:
            raise ValueError("give patch_size or num_patches, not both")
        if self.rotate_trees and self.anchors is None:
            raise ValueError("rotate_trees needs anchors (the rotated tree is built on the anchors)")
        if self.rotate_trees and self.supernodes == "carried":
            raise ValueError("rotate_trees needs supernodes: keys (carried supernodes belong to one tree's patches)")
        return self

    @property
    def num_trees(self) -> int:
        """Ball trees the blocks alternate between: 2 with ``rotate_trees``, else 1."""
        return 2 if self.rotate_trees else 1

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def patch_level(self, n: int) -> int:
        """Depth of the patches of a cloud of ``n`` points: ``K = 2**level`` (rule: ``geometry.patches``)."""
        return patch_level(
            n, num_patches=self.num_patches, patch_size=self.patch_size, num_supernodes=self.num_supernodes
        )
