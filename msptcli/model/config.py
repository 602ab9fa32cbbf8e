"""The one validated configuration of an MSPT network, and the patch-count rule."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from msptcli.errors import InvalidInputError


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


class ModelConfig(BaseModel):
    """Sizes and variants of an MSPT network. Saved inside every checkpoint.

    Patches: a cloud of N points is cut into ``K = 2**level`` runs of its ball-tree
    order. By default ``K * Q ~ sqrt(N)`` (the paper's rule); ``patch_size`` asks
    for patches of about that many points instead, ``num_patches`` fixes K.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    in_features: int = Field(ge=1, description="per-point input features (coordinates, normals, distances, ...)")
    out_features: int = Field(ge=1, description="predicted channels per point")
    condition_features: int = Field(0, ge=0, description="per-sample conditions broadcast to every point")
    width: int = Field(128, ge=1, description="channels C of the point features")
    num_heads: int = Field(8, ge=1)
    depth: int = Field(4, ge=1, description="number of MSPT blocks")
    mlp_ratio: float = Field(4.0, gt=0)
    patch_size: int | None = Field(None, ge=1, description="target points per patch L (K = 2^level closest to N/L)")
    num_patches: int | None = Field(None, ge=1, description="fixed K, a power of two (capped by the cloud size)")
    num_supernodes: int = Field(1, ge=1, description="Q supernodes pooled per patch, a power of two")
    pooling: Literal["mean", "max", "linear"] = "mean"
    supernodes: Literal["keys", "stream"] = Field(
        "keys",
        description="'keys': supernodes are keys/values only (the paper); 'stream': they also attend "
        "and are carried from block to block (the authors' code)",
    )
    attention: Literal["pmsa", "full"] = Field("pmsa", description="'full': dense attention, for comparison")
    checkpointing: bool = Field(False, description="recompute each block in the backward pass to save memory")

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
        return self

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def patch_level(self, n: int) -> int:
        """Depth ``level`` of the patches of a cloud of ``n`` points: ``K = 2**level`` patches.

        Rule: ``num_patches`` if set; else the level whose patches hold about
        ``patch_size`` points; else ``K * Q ~ sqrt(n)``. Always at least one
        point per patch (``K <= n``).
        """
        if n < 1:
            raise InvalidInputError(f"a cloud needs at least one point, got {n}")
        q = int(math.log2(self.num_supernodes))
        if self.num_patches is not None:
            level = int(math.log2(self.num_patches))
        elif self.patch_size is not None:
            level = round(math.log2(max(n / self.patch_size, 1.0)))
        else:
            level = round(0.5 * math.log2(n)) - q
        return max(0, min(level, n.bit_length() - 1))  # floor(log2 n): K <= n
