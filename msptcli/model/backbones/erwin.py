"""Erwin (Zhdanov, Welling and van de Meent, ICML 2025): ball attention over a U-Net of the ball tree.

Matched against the official ``models/erwin.py`` of maxxxzdn/erwin at commit 83faaf9
(``tests/test_erwin.py`` loads it and compares outputs), but built on mspt's own ball tree:
the rows come in tree order, so a ball of ``m`` points at any level is a run of ``m``
consecutive rows and every operation below is a ``view`` (balltree-erwin is not used).

Notation: a level holds n nodes (level 0: the N points) of C channels, cut into balls of m
nodes; H heads of d = C / H channels (the same d at every level); p_i a node's position,
c(B) the centre (mean position) of its ball B.

    x_i   <- x_i + W_pe (p_i - c(B))                                    (Eq. 9, relative position)
    BMSA  = softmax(Q K^T / sqrt(d) + sigma_h D) V,  D_ij = |p_i - p_j|  (Eq. 8, 10; within every ball)
    block: x <- x + BMSA(RMSNorm(x)),  x <- x + SwiGLU(RMSNorm(x))
    pool:  x_P = BN(W [x_c1 ; ... ; x_cs ; p_c1 - c_P ; ... ; p_cs - c_P]),  c_P = mean p_c   (Eq. 12)
    unpool: x_c <- BN(x_c + (W [x_P ; p_c1 - c_P ; ... ; p_cs - c_P])_c)                      (Eq. 13)

where P is a parent and c1..cs its ``stride`` children (consecutive nodes). The encoder runs
blocks at every level and pools to the next; the bottleneck runs blocks on the coarsest level;
the decoder unpools back level by level, the skip being the encoder's output at that level, and
runs blocks again. Level l has ``width * width_multipliers[l]`` channels and as many times the
heads (``config.erwin_settings``).

Cross-ball interaction (``rotate``): the second (odd-index) block of every level attends in the
balls of a second ball tree, built on the rotated points (``trees.reorder[1]``). The reference
builds a new tree on the rotated centres of every coarser level; a tree cannot be built inside
an exported graph, so here the nodes of level l are ordered by the mean position, in the rotated
tree's order, of the points under them (:func:`rotated_orders`): at level 0 exactly the rotated
tree, above it a stand-in that keeps nodes that are close in the rotated tree close.

Not built: the reference's MPNN embedding (it needs torch-cluster's radius graph); ``embed`` is
its ``mp_steps=0`` option, one Linear. BatchNorm follows the reference: in training it normalises
over all nodes of the batch, so a cloud's output then depends on its batch (in eval it does not).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.errors import InvalidInputError
from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.config import ModelConfig
from msptcli.model.layers import gather_rows, init_weights  # init: truncated normal (std 0.02), as the reference
from msptcli.model.layout import PatchLayout

DIM = 3  # coordinates per position


def balls(t: Tensor, size: int) -> Tensor:
    """(n, ...) -> (n / size, size, ...): consecutive rows of the tree order, ``size`` at a time."""
    return t.view(-1, size, *t.shape[1:])


def offsets_from_centre(pos: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Positions (n, 3) relative to the centre of their run of ``size`` rows: (n / size, size, 3), and the
    centres (n / size, 3)."""
    p = balls(pos, size)  # (n / size, size, 3)
    centre = p.mean(dim=1)  # (n / size, 3)
    return p - centre[:, None], centre


class SwiGLU(nn.Module):
    """W_3 (SiLU(W_1 x) * W_2 x)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(dim, hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(self.w2(x) * F.silu(self.w1(x)))


class BallMSA(nn.Module):
    """Ball multi-head self-attention (Eq. 8): full attention within every ball of ``ball_size`` nodes,
    with the relative position embedding of Eq. 9 and the distance bias of Eq. 10.

    ``sigma_att`` (one per head) starts near -1, as in the reference, so attention first favours near nodes.
    """

    def __init__(self, dim: int, num_heads: int, ball_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.ball_size = ball_size
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.pe_proj = nn.Linear(DIM, dim)
        self.sigma_att = nn.Parameter(-1 + 0.01 * torch.randn(1, num_heads, 1, 1))

    def distance_bias(self, pos: Tensor) -> Tensor:
        """Eq. 10: sigma_h |p_i - p_j| for every pair of a ball: (n / m, H, m, m)."""
        p = balls(pos, self.ball_size)  # (n / m, m, 3)
        dist = (p[:, :, None] - p[:, None, :]).square().sum(-1).sqrt()  # (n / m, m, m), exact zeros on the diagonal
        return self.sigma_att * dist[:, None]

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        # x: (n, C) normalised features; pos: (n, 3) positions, no gradient
        n, c = x.shape
        m, heads = self.ball_size, self.num_heads
        rel, _ = offsets_from_centre(pos, m)  # (n / m, m, 3)
        x = x + self.pe_proj(rel.view(n, DIM).to(x.dtype))  # Eq. 9
        # the reference's channel order of qkv: (head, channel, q/k/v), q/k/v fastest
        qkv = self.qkv(x).view(-1, m, heads, c // heads, 3)  # (n / m, m, H, d, 3)
        q, k, v = qkv.permute(4, 0, 2, 1, 3).unbind(0)  # 3 x (n / m, H, m, d)
        bias = self.distance_bias(pos).to(q.dtype)  # (n / m, H, m, m)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (n / m, H, m, d)
        return self.proj(o.transpose(1, 2).reshape(n, c))  # (n, C)


class ErwinBlock(nn.Module):
    """Pre-norm block: x + BMSA(RMSNorm(x)), then x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim: int, num_heads: int, ball_size: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(dim)
        self.norm2 = nn.RMSNorm(dim)
        self.attn = BallMSA(dim, num_heads, ball_size)
        self.mlp = SwiGLU(dim, hidden)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class ErwinLevel(nn.Module):
    """The blocks of one level of the encoder, the bottleneck or the decoder; with ``rotation`` (the level's
    rotated order and its inverse) every odd-index block attends in the balls of the rotated order.
    ``checkpointing``: every block is recomputed in the backward pass (``model.checkpointing``)."""

    def __init__(
        self, depth: int, dim: int, num_heads: int, ball_size: int, hidden: int, checkpointing: bool = False
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ErwinBlock(dim, num_heads, ball_size, hidden) for _ in range(depth))
        self.checkpointing = checkpointing

    def forward(self, x: Tensor, pos: Tensor, rotation: tuple[Tensor, Tensor] | None) -> Tensor:
        # x: (n, C); pos: (n, 3); rotation: 2 x (n,) long
        pos_rotated = None if rotation is None or len(self.blocks) < 2 else gather_rows(pos, rotation[0])
        for index, block in enumerate(self.blocks):
            if pos_rotated is not None and index % 2 == 1:
                order, inverse = rotation
                x = gather_rows(self._run(block, gather_rows(x, order), pos_rotated), inverse)  # back in tree order
            else:
                x = self._run(block, x, pos)
        return x

    def _run(self, block: ErwinBlock, x: Tensor, pos: Tensor) -> Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, pos, use_reentrant=False)
        return block(x, pos)


class BallPooling(nn.Module):
    """Eq. 12: every ``stride`` consecutive nodes (the children of one parent ball) become one node at their
    centre, from their features and their positions relative to it (Linear, BatchNorm). Stride 1: no pooling."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.proj = nn.Linear(stride * (dim_in + DIM), dim_out)
            self.norm = nn.BatchNorm1d(dim_out)

    def forward(self, x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        # x: (n, C_in); pos: (n, 3) -> (n / s, C_out), (n / s, 3)
        s = self.stride
        if s == 1:
            return x, pos
        rel, centre = offsets_from_centre(pos, s)  # (n / s, s, 3), (n / s, 3)
        children = balls(x, s).flatten(1)  # (n / s, s * C_in)
        x = torch.cat([children, rel.flatten(1).to(x.dtype)], dim=1)  # (n / s, s * (C_in + 3))
        return self.norm(self.proj(x)), centre


class BallUnpooling(nn.Module):
    """Eq. 13: every node gives its ``stride`` children a correction from its features and their positions
    relative to its centre, added to the children's own (skip) features; then BatchNorm."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(dim_in + stride * DIM, stride * dim_out)
        self.norm = nn.BatchNorm1d(dim_out)

    def forward(self, x: Tensor, centre: Tensor, skip: Tensor, pos: Tensor) -> Tensor:
        # x: (n / s, C_in) parents at centre (n / s, 3); skip: (n, C_out) children at pos (n, 3) -> (n, C_out)
        s = self.stride
        rel = (balls(pos, s) - centre[:, None]).flatten(1)  # (n / s, s * 3)
        up = self.proj(torch.cat([x, rel.to(x.dtype)], dim=1))  # (n / s, s * C_out)
        return self.norm(skip + up.view(skip.shape))  # (n, C_out)


def rotated_orders(trees: AnchorTrees, strides: Sequence[int]) -> list[Tensor]:
    """The rotated order of every level: for level 0 and each level after a stride (the encoder's, then the
    bottleneck), (N / prod(strides[:l]),) long, the node at every place of the rotated order.

    Level 0 is the rotated tree itself (``trees.reorder[1]``). A node of level l is a run of
    ``prod(strides[:l])`` rows; the nodes are sorted by the mean, over their rows, of those rows' places
    in the rotated tree (``trees.restore[1]``), ties to the earlier node: a stand-in, computable in the
    exported graph, for the reference's tree built on the rotated centres. Clouds keep their own rows.
    """
    rank = trees.restore[1]  # (N,) place of every row in the rotated tree
    orders = [trees.reorder[1]]
    size = 1
    for stride in strides:
        size *= stride
        total = rank.view(-1, size).sum(dim=1)  # (n_l,) size * mean place: the same order, exact in int64
        nodes = total.shape[0]
        index = torch.arange(nodes, device=rank.device)
        orders.append(torch.argsort(total * nodes + index))  # unique keys: ties to the earlier node
    return orders


class ErwinBackbone(nn.Module):
    """Erwin on packed clouds in ball-tree order (see the module docstring).

    Args:
        config: the ``model:`` section; its ``erwin_settings``, ``width``, ``num_heads`` and ``mlp_ratio``.
        in_features: per-point input channels F.
    """

    def __init__(self, config: ModelConfig, in_features: int) -> None:
        super().__init__()
        settings = config.erwin_settings
        self.settings = settings
        self.strides = tuple(settings.strides)
        self.rotate = settings.rotate
        widths = [config.width * k for k in settings.width_multipliers]
        heads = [config.num_heads * k for k in settings.width_multipliers]  # the same head dim at every level

        def level(depth: int, index: int) -> ErwinLevel:
            width = widths[index]
            hidden = int(width * config.mlp_ratio)
            return ErwinLevel(depth, width, heads[index], settings.ball_sizes[index], hidden, config.checkpointing)

        for index, stride in enumerate(self.strides):
            if stride == 1 and widths[index] != widths[index + 1]:
                raise ValueError(f"erwin: stride 1 (no pooling) after level {index} needs the same width_multipliers")
        last = len(self.strides)
        self.embed = nn.Linear(in_features, config.width)  # the reference's ErwinEmbedding with mp_steps=0
        self.encoder = nn.ModuleList(level(settings.enc_depths[i], i) for i in range(last))
        self.pools = nn.ModuleList(BallPooling(widths[i], widths[i + 1], s) for i, s in enumerate(self.strides))
        self.bottleneck = level(settings.enc_depths[last], last)
        self.unpools = nn.ModuleList(BallUnpooling(widths[i + 1], widths[i], s) for i, s in enumerate(self.strides))
        self.decoder = nn.ModuleList(level(settings.dec_depths[i], i) for i in range(last))
        self.apply(init_weights)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        layout: PatchLayout,
        trees: AnchorTrees = ONE_TREE,
        *,
        chunk_points: int | None = None,
    ) -> Tensor:
        """(N, C) embedded points -> (N, C) level-0 features, same rows.

        ``positions`` (N, 3) carry no gradient (as in the reference). ``layout`` is read only to check the
        cloud sizes (outside tracing); ``chunk_points`` is ignored: the U-Net and BatchNorm need whole clouds.
        """
        self._check(x, layout, trees)
        pos = positions.detach().to(self.embed.weight.dtype)  # (N, 3)
        rotations = self._rotations(trees)
        skips = []
        for index, (blocks, pool) in enumerate(zip(self.encoder, self.pools, strict=True)):
            x = blocks(x, pos, rotations[index])  # (n_l, C_l)
            skips.append((x, pos))
            x, pos = pool(x, pos)  # (n_l / s_l, C_l+1), centres (n_l / s_l, 3)
        x = self.bottleneck(x, pos, rotations[len(self.strides)])
        for index in reversed(range(len(self.strides))):
            skip, child_pos = skips[index]
            x = self.unpools[index](x, pos, skip, child_pos)  # (n_l, C_l)
            pos = child_pos
            x = self.decoder[index](x, pos, rotations[index])
        return x  # (N, C)

    def _rotations(self, trees: AnchorTrees) -> list[tuple[Tensor, Tensor] | None]:
        """Every level's rotated order and its inverse (None everywhere without rotation)."""
        if not self.rotate:
            return [None] * (len(self.strides) + 1)
        orders = rotated_orders(trees, self.strides)
        inverses = [trees.restore[1], *(torch.argsort(order) for order in orders[1:])]
        return list(zip(orders, inverses, strict=True))

    def _check(self, x: Tensor, layout: PatchLayout, trees: AnchorTrees) -> None:
        if self.rotate and trees.count < 2:
            raise ValueError("erwin.rotate needs the rotated ball tree: pass trees with two orders (AnchorTrees)")
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # sizes are symbolic: nothing to read
            return
        multiple = self.settings.cloud_multiple()
        for cloud, size in enumerate(layout.sizes):
            if size % multiple:
                raise InvalidInputError(
                    f"erwin: cloud {cloud} has {size} points, not a multiple of {multiple} (whole balls at every level)"
                )
        if x.shape[0] != layout.num_points:
            raise ValueError(f"features have {x.shape[0]} rows but the layout has {layout.num_points} points")
