"""The Multi-Scale Patch Transformer: embedding, a stack of MSPT blocks, a point-wise head.

Inputs are packed (see ``layout.py``): ``features`` (N, F) for the points of
all clouds in ball-tree order, a ``PatchLayout`` built once per batch, and
optional per-sample ``conditions`` (B, F_c) broadcast to the points.

    x_0     = Embed([f_i ; c_b])                         point-wise MLP
    x_l+1   = x_l' + MLP(LN(x_l')),
    x_l'    = x_l + PMSA(LN(x_l))                         (Eq. 4-7, pre-norm)
    y_i     = Head(LN(x_L))                               one output per target channel
"""

from __future__ import annotations

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


class FullAttention(nn.Module):
    """Dense multi-head attention over all points of each cloud, O(N^2): the comparison baseline."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: Tensor, layout: PatchLayout) -> Tensor:
        c = h.shape[1]
        offsets = layout.offsets
        sizes = offsets[1:] - offsets[:-1]
        b, longest = layout.num_clouds, max(layout.sizes)
        slot = torch.arange(longest, device=h.device)
        valid = slot[None, :] < sizes[:, None]  # (B, Nmax)
        index = torch.where(valid, offsets[:-1, None] + slot[None, :], 0)
        q, k, v = (t.view(b, longest, self.num_heads, -1).transpose(1, 2) for t in self.qkv(h)[index].split(c, -1))
        bias = None
        if min(layout.sizes) < longest:
            bias = torch.zeros(valid.shape, dtype=q.dtype, device=h.device).masked_fill(~valid, -torch.inf)
            bias = bias[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, Nmax, d)
        o = self.proj(o.transpose(1, 2).reshape(b * longest, c))
        return o[valid.reshape(-1)]  # (N, C), padded rows dropped


class MSPTBlock(nn.Module):
    """One pre-norm block: PMSA with residual, then an MLP with residual (Eq. 7)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.width
        self.stream = config.supernodes == "stream"
        self.full = config.attention == "full"
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), dim)
        if self.full:
            self.attn = FullAttention(dim, config.num_heads)
        else:
            # With streaming supernodes the stream is pooled once, before the first block.
            self.pool = None if self.stream else SupernodePool(dim, config.pooling)
            self.attn = PMSA(dim, config.num_heads, stream=self.stream)

    def supernodes(self, x: Tensor, chunk: PatchChunk) -> Tensor:
        """Eq. 4 on normalised features: (p * Q, C) supernodes of the chunk's patches."""
        return self.pool(self.norm1(x), chunk.sub_slots, chunk.sub_count)

    def supernode_kv(self, x: Tensor | None, z: Tensor | None, layout: PatchLayout) -> tuple[Tensor, Tensor]:
        """Keys/values of all supernodes: pooled from the points, or the normalised carried stream ``z``."""
        s = self.norm1(z) if self.stream else self.supernodes(x, layout.whole)
        return self.attn.supernode_kv(s, layout)

    def update(
        self, x: Tensor, chunk: PatchChunk, sn_kv: tuple[Tensor, Tensor], z: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The block on the points of ``chunk`` (and, streaming supernodes, on the chunk's own ``z``)."""
        a, az = self.attn(self.norm1(x), chunk, sn_kv, self.norm1(z) if self.stream else None)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        if self.stream:
            z = z + az
            z = z + self.mlp(self.norm2(z))
        return x, z

    def forward(self, x: Tensor, layout: PatchLayout, z: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self.full:
            x = x + self.attn(self.norm1(x), layout)
            return x + self.mlp(self.norm2(x)), None
        return self.update(x, layout.whole, self.supernode_kv(x, z, layout), z)


class MSPT(nn.Module):
    """The Multi-Scale Patch Transformer (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.width
        self.embed = Mlp(config.in_features + config.condition_features, dim, dim)
        self.stream_pool = SupernodePool(dim, config.pooling) if config.supernodes == "stream" else None
        self.blocks = nn.ModuleList(MSPTBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, config.out_features)
        self.apply(_init_weights)

    def inputs(self, features: Tensor, layout: PatchLayout, conditions: Tensor | None, rows: slice) -> Tensor:
        """(n, F + F_c): the features of packed rows ``rows`` with their cloud's conditions appended."""
        f = features[rows]
        if self.config.condition_features == 0:
            return f
        if conditions is None or conditions.shape != (layout.num_clouds, self.config.condition_features):
            got = None if conditions is None else tuple(conditions.shape)
            raise ValueError(
                f"conditions must have shape ({layout.num_clouds}, {self.config.condition_features}), got {got}"
            )
        cloud = torch.searchsorted(layout.offsets, torch.arange(rows.start, rows.stop, device=f.device), right=True) - 1
        return torch.cat([f, conditions[cloud].to(f.dtype)], dim=-1)

    def forward(self, features: Tensor, layout: PatchLayout, conditions: Tensor | None = None) -> Tensor:
        """(N, F) packed features -> (N, out_features) predictions, in the same (tree) order."""
        n = layout.num_points
        if features.shape[0] != n:
            raise ValueError(f"features have {features.shape[0]} rows but the layout has {n} points")
        x = self.embed(self.inputs(features, layout, conditions, slice(0, n)))  # (N, C)
        z = None
        if self.stream_pool is not None:
            z = self.stream_pool(x, layout.whole.sub_slots, layout.whole.sub_count)  # (P * Q, C)
        for block in self.blocks:
            if self.config.checkpointing and torch.is_grad_enabled():
                x, z = checkpoint(block, x, layout, z, use_reentrant=False)
            else:
                x, z = block(x, layout, z)
        return self.head(self.norm(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
