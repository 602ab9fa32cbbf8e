"""MSPT with decoupled space-time attention over a transient step's history (``model.time_axis: attention``).

A transient step's inputs hold, per point, the current state and h earlier increments (``data/transient.py``).
The plain MSPT reads all of them as the channels of one token per point. This network follows MATEY's
decoupled spatiotemporal attention (Zhang et al., 2024; the axial attention of Ho et al., 2019, as in
McCabe et al.'s multiple-physics pretraining): every point has T = h + 1 tokens, one per time level, and
each block attends along time and along space in turn:

    x_i,0   = Embed_now([s_i ; c_i])                     level 0: the state at t (fields, derivatives)
    x_i,j   = Embed_past([s_i ; d_i,j]) + lag_j          level j = 1..h: the increment f(t-j+1) - f(t-j)
                                                         (and its carried copy), a learnt embedding per lag
    per block:
      x_i,:  <- x_i,: + TimeAttn(LN(x_i,:))              every point over its own T levels (T x T scores)
      x_:,j  <- MSPTBlock(x_:,j)                          every level over space: PMSA + MLP (Eq. 4-7),
                                                         the same weights for every level
    y_i     = Head(LN(x_i,0))                            the increment, read from the current level

``s`` are the inputs every level shares (geometry and conditions). The spatial part is MSPT's own block,
so each level costs what the plain network costs: a step is about T times the plain one. Streaming
(``chunk_points``) works as for MSPT, since the time attention is point-wise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.config import ModelConfig
from msptcli.model.layers import Embedding, channels, init_weights, over_chunks, point_chunks, point_rows
from msptcli.model.layout import PatchLayout
from msptcli.model.mspt import MSPTBlock
from msptcli.model.queries import Queries


@dataclass(frozen=True)
class TimeLevels:
    """Which input columns make each time level's token (``StepColumns.time_levels`` builds it).

    ``shared`` go into every level (geometry first, so Fourier features see the coordinates), ``current``
    into level 0, ``past[j - 1]`` into level j. Every past level has the same number of columns.
    """

    shared: tuple[int, ...]
    current: tuple[int, ...]
    past: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if not self.past:
            raise ValueError("time attention needs a history: data.transient.history >= 1")
        if len({len(p) for p in self.past}) != 1:
            raise ValueError(f"every past level needs the same number of columns, got {[len(p) for p in self.past]}")

    @property
    def count(self) -> int:
        """T: the current level and one per history step."""
        return 1 + len(self.past)

    @property
    def width(self) -> int:
        """The input columns all levels read together."""
        return 1 + max((*self.shared, *self.current, *(c for p in self.past for c in p)))


class TimeAttention(nn.Module):
    """Multi-head self-attention of every point over its own T time levels (no mixing across points)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape  # (N, T, C)
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # 3 x (N, H, T, D)
        # T is a handful: two small batched products beat the fused kernel's per-batch set-up on the CPU (1.3x)
        scores = torch.einsum("nhtd,nhsd->nhts", q, k) * (c // self.num_heads) ** -0.5  # (N, H, T, T)
        a = torch.einsum("nhts,nhsd->nhtd", scores.softmax(dim=-1), v)  # (N, H, T, D)
        return self.proj(a.transpose(1, 2).reshape(n, t, c))  # (N, T, C)


class SpaceTimeBlock(nn.Module):
    """Time attention with residual, then MSPT's block on every time level (module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm_t = nn.LayerNorm(config.width)
        self.time = TimeAttention(config.width, config.num_heads)
        self.space = MSPTBlock(config)

    def forward(self, x: list[Tensor], layout: PatchLayout, chunks: Sequence | None = None) -> list[Tensor]:
        """``x``: T tensors (N, C), level 0 the current one; with several ``chunks`` they are updated in place."""
        chunks = [layout.whole] if chunks is None else chunks

        def along_time(ch) -> Tensor:  # (n, T, C) of the chunk's points
            xs = torch.stack([level[point_rows(ch)] for level in x], dim=1)
            return xs + self.time(self.norm_t(xs))

        xs = over_chunks(chunks, point_rows, along_time)  # (N, T, C)
        out = []
        for j in range(xs.shape[1]):
            level = xs[:, j] if len(chunks) == 1 else xs[:, j].contiguous()  # chunks update it in place
            out.append(self.space(level, layout, chunks))
        return out


class SpaceTimeMSPT(nn.Module):
    """MSPT whose tokens are (point, time level) pairs (module docstring); runs on mesh points, no anchors.

    Args:
        config: the ``model:`` section (``time_axis: attention``).
        in_features: per-point input channels F (``levels.width``).
        out_features: predicted channels per point.
        levels: which input columns make each time level's token.
    """

    def __init__(self, config: ModelConfig, *, in_features: int, out_features: int, levels: TimeLevels) -> None:
        super().__init__()
        self.config = config
        self.in_features, self.out_features = channels(in_features, out_features)
        if levels.width != in_features:
            raise ValueError(f"the time levels read {levels.width} input columns, the network takes {in_features}")
        dim = config.width
        self.register_buffer("now_columns", torch.tensor([*levels.shared, *levels.current]), persistent=False)
        past = torch.tensor([[*levels.shared, *p] for p in levels.past])  # (h, |shared| + |past|)
        self.register_buffer("past_columns", past, persistent=False)
        self.embed_now = Embedding(len(self.now_columns), dim, config.fourier_features)
        self.embed_past = Embedding(past.shape[1], dim, config.fourier_features)
        self.lag = nn.Parameter(torch.zeros(len(levels.past), dim))  # a learnt offset per lag j
        self.blocks = nn.ModuleList(SpaceTimeBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.lag, std=0.02)

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

        ``chunk_points``: run in chunks of whole patches (inference only, under ``torch.no_grad()``).
        """
        if queries is not None or trees is not ONE_TREE:
            raise ValueError("time attention runs on the mesh points: it has no anchors (model.anchors: null)")
        chunks = point_chunks(features, layout, chunk_points)
        x = [over_chunks(chunks, point_rows, lambda ch: self.embed_now(features[point_rows(ch)][:, self.now_columns]))]
        for j in range(self.lag.shape[0]):  # levels 1..h: (N, C) each
            x.append(
                over_chunks(
                    chunks,
                    point_rows,
                    lambda ch, j=j: self.embed_past(features[point_rows(ch)][:, self.past_columns[j]]),
                )
                + self.lag[j]
            )
        for block in self.blocks:
            if self.config.checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, layout, use_reentrant=False)
            else:
                x = block(x, layout, chunks)
        # (N, out_features), read from the current level
        return over_chunks(chunks, point_rows, lambda ch: self.head(self.norm(x[0][point_rows(ch)])))

    def read_anchors(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("time attention runs on the mesh points: it has no anchors (model.anchors: null)")

    answer_queries = read_anchors
