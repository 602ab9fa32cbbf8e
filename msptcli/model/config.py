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
RENAMED = {"pooling": {"linear": "softmax"}}


def without_removed_keys(model: dict) -> dict:
    """A ``model:`` section without the key ``supernodes``, removed with its variant ``carried`` (formerly
    ``stream``): ``keys``, which every config and checkpoint saved before holds, is dropped silently.

    Raises:
        ValueError: one line for any other value (a network of the removed variant).
    """
    if "supernodes" not in model:
        return model
    value = model["supernodes"]
    if value in ("carried", "stream"):
        raise ValueError(
            f"model.supernodes: {value!r} was removed in mspt 0.1 (it did not beat keys on the accuracy "
            "benchmark, docs/benchmarks.md): drop the key and train again"
        )
    if value != "keys":
        raise ValueError("model.supernodes was removed in mspt 0.1 (every block pools its own): drop the key")
    return {k: v for k, v in model.items() if k != "supernodes"}


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
    reads: Literal["patch", "nearest", "blend"] = Field(
        "patch",
        description="what a query attends to besides the supernodes: 'patch', the anchors of its nearest anchor's "
        "ball-tree patch; 'nearest', its `neighbours` nearest anchors under a window that falls smoothly to zero "
        "at the next one; 'blend', the anchors of its two nearest patches, the second's weight falling to zero "
        "where a third patch is as near (both continuous in space: no patch boundaries in the fields)",
    )
    neighbours: int = Field(
        8,
        ge=1,
        le=1024,
        description="anchors a query reads with reads: nearest; with reads: blend, the nearest anchors among which "
        "it looks for a second and third patch (the width of the blend at a patch boundary)",
    )
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


class AdaptiveConfig(BaseModel):
    """Variance-adaptive patches (MATEY on the ball tree, ``geometry/adaptive.py``, docs/model.md).

    A cloud keeps the budget of ``K = 2**level`` patches of the uniform rule (``patch_size`` /
    ``num_patches`` / K Q ~ sqrt N) but takes them at several depths: from the uniform cut ``refine``
    levels coarser, the subtree whose input features vary most is split in two until there are K,
    none deeper than ``refine`` levels below the uniform depth. Patches are then small where the
    geometry has structure (edges, the body's surface among volume points) and large where it is
    smooth, with the same number of supernodes. The cut is computed with the sample's tree, from its
    inputs, so it is deterministic and the same in training, streaming and export.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    refine: int = Field(1, ge=1, le=8, description="levels coarser and finer than the uniform depth a patch may take")
    from_channel: int = Field(
        3,
        ge=0,
        description="the variance is taken over the input channels from this one on (the first three are the "
        "coordinates, whose spread within a subtree is its size, not structure)",
    )


class ErwinConfig(BaseModel):
    """Erwin (Zhdanov et al., ICML 2025): ball attention over a U-Net of the ball tree (``model/backbones/erwin.py``).

    Level 0 cuts the tree order into balls of ``ball_sizes[0]`` points; each encoder level pools
    ``strides[l]`` consecutive nodes (children of one parent ball) into one, so level l has
    ``N / prod(strides[:l])`` nodes of ``width * width_multipliers[l]`` channels; the decoder refines
    back. ``rotate``: the second block of every level attends in the balls of the rotated tree.
    The MPNN embedding of the paper is not built (it needs a radius graph; Erwin's MPNN-free option).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    ball_sizes: tuple[int, ...] = Field(
        (128, 128), description="points per ball at every level (the last: the bottleneck)"
    )
    strides: tuple[int, ...] = Field(
        (4,), description="nodes pooled into one between levels (one fewer than ball_sizes)"
    )
    enc_depths: tuple[int, ...] = Field((2, 2), description="blocks at every encoder level and the bottleneck")
    dec_depths: tuple[int, ...] = Field((2,), description="blocks at every decoder level (one fewer than ball_sizes)")
    width_multipliers: tuple[int, ...] = Field((1, 2), description="channels of every level, times model.width")
    rotate: bool = Field(True, description="the second block of every level reads the balls of the rotated tree")

    @model_validator(mode="after")
    def _check(self) -> ErwinConfig:
        levels = len(self.ball_sizes)
        if len(self.enc_depths) != levels or len(self.width_multipliers) != levels:
            raise ValueError(f"erwin: ball_sizes, enc_depths and width_multipliers need one value per level ({levels})")
        if len(self.strides) != levels - 1 or len(self.dec_depths) != levels - 1:
            raise ValueError(
                f"erwin: strides and dec_depths need one value per level but the bottleneck ({levels - 1})"
            )
        for name in ("ball_sizes", "strides"):
            if not all(_is_power_of_two(v) for v in getattr(self, name)):
                raise ValueError(
                    f"erwin.{name} must be powers of two (nodes of the ball tree), got {getattr(self, name)}"
                )
        if (
            min(self.enc_depths) < 1
            or min(self.width_multipliers) < 1
            or (self.dec_depths and min(self.dec_depths) < 1)
        ):
            raise ValueError("erwin: depths and width multipliers must be positive")
        if self.width_multipliers[0] != 1:
            raise ValueError("erwin.width_multipliers[0] must be 1 (level 0 has model.width channels)")
        return self

    def cloud_multiple(self) -> int:
        """Every cloud's size must be a multiple of this: whole balls at every level."""
        m, pooled = 1, 1
        for level, ball in enumerate(self.ball_sizes):
            m = max(m, ball * pooled)
            if level < len(self.strides):
                pooled *= self.strides[level]
        return max(m, pooled)


class NSAConfig(BaseModel):
    """Ball-tree native sparse attention (Erwin-NSA, ``model/backbones/nsa.py``): per point a compressed branch (all
    ball summaries of its cloud), a selected branch (all points of the ``selected`` balls whose summaries
    score highest for the point's ball) and a local branch (its own ball), mixed by learned gates.
    Balls are the patches of the layout (``model.patch_size`` / ``num_patches``), summaries its supernodes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    selected: int = Field(4, ge=1, le=4096, description="balls every ball selects for full attention (top-k)")


class TransolverConfig(BaseModel):
    """Transolver (Wu et al., ICML 2024): physics attention over learned slices (``model/backbones/transolver.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    slices: int = Field(32, ge=1, le=4096, description="slice tokens G per head")


class ModelConfig(BaseModel):
    """Sizes and variants of an MSPT network. Saved inside every checkpoint.

    Patches: a cloud of N points is cut into ``K = 2**level`` runs of its ball-tree
    order. By default ``K * Q ~ sqrt(N)`` (the paper's rule); ``patch_size`` asks
    for patches of about that many points instead, ``num_patches`` fixes K.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    backbone: Literal["mspt", "erwin", "erwin-nsa", "transolver"] = Field(
        "mspt",
        description="the network on the points (with anchors: on the anchors; the queries' reading is shared): "
        "mspt, erwin, erwin-nsa (ball-tree sparse attention) or transolver; its own settings in model.<name>",
    )
    width: int = Field(64, ge=1, description="channels C of the point features")
    num_heads: int = Field(4, ge=1, description="attention heads; must divide width")
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
    adaptive: AdaptiveConfig | None = Field(
        None,
        description="variance-adaptive patches (MATEY): the same number of patches at several tree depths, small "
        "where the inputs vary; null: uniform patches of one depth",
    )
    rotate_trees: bool = Field(
        False,
        description="odd blocks cut the anchors into the patches of a rotated ball tree (Erwin), so that patch "
        "boundaries move from block to block; needs anchors",
    )
    time_axis: Literal["channels", "attention"] = Field(
        "channels",
        description="how a transient step reads its history: 'channels', as inputs of one token per point; "
        "'attention', one token per point and time level, each block attending over every point's levels, then "
        "over space on every level (MATEY's decoupled space-time attention, model/spacetime.py; about "
        "1 + history times the step's cost)",
    )
    checkpointing: bool = Field(False, description="recompute each block in the backward pass to save memory")
    query_reading: Literal["blocks", "final"] = Field(
        "blocks",
        description="with anchors, backbone mspt: where the queries read the anchors: 'blocks', at the input of "
        "every MSPT block with its weights; 'final', the anchors' final features in query_depth reading blocks "
        "of their own (as every other backbone's queries do)",
    )
    anchor_blocks: int = Field(
        0,
        ge=0,
        le=16,
        description="with anchors, backbone mspt, query_reading: blocks: MSPT blocks the anchors pass before the "
        "`depth` blocks the queries read, so that the first reading meets mixed features rather than the embedding "
        "(they cost the anchors' share of a step only)",
    )
    query_depth: int = Field(
        2,
        ge=1,
        le=16,
        description="with anchors: reading blocks in which the queries read the anchors' final features (a "
        "backbone other than mspt, or query_reading: final)",
    )
    erwin: ErwinConfig | None = Field(None, description="settings of backbone: erwin (defaults when null)")
    nsa: NSAConfig | None = Field(None, description="settings of backbone: erwin-nsa (defaults when null)")
    transolver: TransolverConfig | None = Field(
        None, description="settings of backbone: transolver (defaults when null)"
    )

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: object) -> object:
        return without_removed_keys(data) if isinstance(data, dict) else data

    @field_validator("pooling", mode="before")
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
        if self.rotate_trees and self.anchors is not None and self.anchors.reads == "blend":
            raise ValueError("anchors.reads: blend reads the patches of one ball tree; it does not take rotate_trees")
        if self.adaptive is not None:
            for bad, why in (
                (self.backbone != "mspt", f"belong to MSPT's patches, not to backbone {self.backbone}"),
                (self.rotate_trees, "and rotate_trees do not combine (the cut follows one tree)"),
            ):
                if bad:
                    raise ValueError(f"adaptive patches {why}")
        if self.time_axis == "attention" and self.backbone != "mspt":
            raise ValueError(f"time_axis: attention runs MSPT's blocks, not backbone {self.backbone}")
        own = {"erwin": "erwin", "erwin-nsa": "nsa", "transolver": "transolver"}
        for backbone, block in own.items():
            if getattr(self, block) is not None and self.backbone != backbone:
                raise ValueError(
                    f"model.{block} is set but the backbone is {self.backbone} (model.backbone={backbone})"
                )
        if self.backbone == "erwin":
            self._check_erwin()
        if self.query_reading == "final" and self.anchors is None:
            raise ValueError("query_reading: final needs anchors (the queries read the anchors' final features)")
        if self.anchor_blocks and (self.anchors is None or self.reads_final or self.time_axis != "channels"):
            raise ValueError(
                "anchor_blocks are blocks of the anchors before the ones MSPT's queries read: they need anchors, "
                "backbone mspt, query_reading: blocks and time_axis: channels"
            )
        if self.reads_final and self.query_depth < self.num_trees:
            raise ValueError(
                f"query_depth {self.query_depth} is below the {self.num_trees} ball trees the reading blocks alternate "
                "between (each tree needs a block)"
            )
        return self

    def _check_erwin(self) -> None:
        erwin = self.erwin_settings
        if self.anchors is None:
            raise ValueError(
                "backbone erwin needs anchors: its balls and pooling need clouds of a fixed size (a multiple of "
                f"{erwin.cloud_multiple()} points), which the anchors give"
            )
        n, m = self.anchors.surface + self.anchors.volume, erwin.cloud_multiple()
        if n % m:
            raise ValueError(
                f"backbone erwin: anchors.surface + anchors.volume = {n} is not a multiple of {m} "
                "(whole balls at every level: ball_sizes times the strides below them)"
            )

    @property
    def erwin_settings(self) -> ErwinConfig:
        return self.erwin or ErwinConfig()

    @property
    def nsa_settings(self) -> NSAConfig:
        return self.nsa or NSAConfig()

    @property
    def transolver_settings(self) -> TransolverConfig:
        return self.transolver or TransolverConfig()

    @property
    def reads_final(self) -> bool:
        """Whether queries read the anchors' final features in reading blocks of their own (``query_depth``)."""
        return self.anchors is not None and (self.backbone != "mspt" or self.query_reading == "final")

    @property
    def num_trees(self) -> int:
        """Ball trees the blocks alternate between: 2 with ``rotate_trees`` (or Erwin's ``rotate``), else 1."""
        rotated = self.rotate_trees or (self.backbone == "erwin" and self.erwin_settings.rotate)
        return 2 if rotated else 1

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def patch_level(self, n: int) -> int:
        """Depth of the patches of a cloud of ``n`` points: ``K = 2**level`` (rule: ``geometry.patches``)."""
        return patch_level(
            n, num_patches=self.num_patches, patch_size=self.patch_size, num_supernodes=self.num_supernodes
        )
