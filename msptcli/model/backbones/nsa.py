"""Erwin-NSA: native sparse attention over the balls of a ball tree.

Lapautre, Marchenko, Patiño and Zhou, "Natively Trainable Sparse Attention for Hierarchical
Point Cloud Datasets" (2025): the three branches of Native Sparse Attention (NSA; Yuan et al.,
DeepSeek, 2025) with Erwin's balls as NSA's blocks. Here the balls are the layout's patches and
the ball summaries its supernodes (``model/layout.py``): P balls padded to L slots, Q summaries per
ball, S summaries per cloud (padded), H heads of d = C / H channels. For a point i of ball p:

    s_j     = Pool({h_t : t in sub-run j})                                  summaries (MSPT Eq. 4)
    q_i     = W_q h_i,   [k_t ; v_t] = W_kv h_t,   [k_j ; v_j] = W_kv s_j    one kv projection
    o_cmp_i = softmax(q_i K_S^T / sqrt(d)) V_S                             compressed: all summaries of the cloud
    r_pj    = mean over heads and real points i of p of  sum_{s in ball j} softmax(q_i K_S^T / sqrt(d))_s
    I_p     = top-k balls j of r_pj                                         selection, shared by the ball
    o_sel_i = softmax(q_i K_{I_p}^T / sqrt(d)) V_{I_p}                      selected: all points of the k balls
    o_loc_i = softmax(q_i K_p^T / sqrt(d)) V_p                              local: the points of its own ball
    o_i     = W_o [g_cmp o_cmp + g_sel o_sel + g_loc o_loc]_i,   g = sigmoid(W_g h_i)  per point and head

(NSA's gated output over its three branches, its token compression and its token selection: block
importance scores from the compressed attention probabilities, then the top-n blocks; NSA's query
blocks are our balls, so every point of a ball shares the ball's selection.)
Each branch has its own softmax; padded slots, padded or empty summaries and absent balls are masked
and never selected. The selection is discrete (no gradient flows through the top-k indices); every
other step is differentiable.

Differences from NSA proper: points and summaries share one kv projection (NSA gives every branch its
own keys and values); the summaries are the layout's pooled supernodes rather than NSA's learned MLP
over a block's keys (with mean pooling the summary keys are exactly the mean keys of their sub-run);
attention is multi-head and all heads share one selection (NSA: grouped-query heads share it within
a group); there is no causal mask and no sliding window (a point cloud has no order to slide along:
the local branch is the point's own ball). Erwin's relative position embedding and distance bias are
not used: ``positions`` are accepted and ignored.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from msptcli.model.anchors import ONE_TREE, AnchorTrees
from msptcli.model.config import ModelConfig
from msptcli.model.layers import Embedding, Mlp, gather_rows, init_weights
from msptcli.model.layout import PatchLayout
from msptcli.model.pmsa import SupernodePool

#: Order of the gates in the output of ``BallSparseAttention.gate`` (per branch, H heads each).
BRANCHES = ("compressed", "selected", "local")


def split_key_bias(key_bias: Tensor | None, length: int) -> tuple[Tensor | None, Tensor | None]:
    """The layout's (P, 1, 1, L + S) key bias as the bias of the ball's points (P, 1, 1, L) and of the
    summaries of its cloud (P, 1, 1, S); both None when nothing is padded."""
    if key_bias is None:
        return None, None
    return key_bias[..., :length], key_bias[..., length:]


def ball_index(layout: PatchLayout) -> Tensor:
    """(P, K) long: the (global) ball of each of the K = S // Q ball places of every ball's cloud (0 where padded).

    A cloud's summaries are its balls' summaries in ball order, Q per ball (``layout.sub_index``).
    """
    num_supernodes = layout.num_supernodes  # Q summaries per ball
    first = layout.sub_index[:, ::num_supernodes]  # (B, K): first summary of each ball
    return gather_rows(torch.div(first, num_supernodes, rounding_mode="floor"), layout.whole.patch_cloud)  # (P, K)


def sum_per_ball(t: Tensor, num_supernodes: int) -> Tensor:
    """(P, S) values of every summary of a cloud -> (P, K) sums over every ball's Q consecutive summaries."""
    p, s = t.shape
    return t.view(p, s // num_supernodes, num_supernodes).sum(dim=-1)  # (P, K = S // Q)


def ball_scores(prob: Tensor, query_valid: Tensor | None, num_supernodes: int) -> Tensor:
    """NSA's block importance scores, per ball: (P, H, L, S) compressed probabilities -> (P, K) scores
    of the balls of the cloud.

    The probabilities of a ball's Q summaries are summed, then averaged over the heads and over the
    real points of the querying ball (``query_valid`` (P, L), None when nothing is padded).
    """
    heads = prob.shape[1]  # prob: (P, H, L, S)
    if query_valid is None:
        per_summary = prob.mean(dim=(1, 2))  # (P, S)
    else:
        w = query_valid.to(prob.dtype)  # (P, L)
        w = w / (w.sum(dim=1, keepdim=True) * heads)
        per_summary = torch.einsum("phls,pl->ps", prob, w)  # (P, S)
    return sum_per_ball(per_summary, num_supernodes)  # (P, K)


def select_balls(
    score: Tensor, ball_valid: Tensor | None, balls: Tensor, selected: int
) -> tuple[Tensor, Tensor | None]:
    """NSA's top-n block selection: the top-k balls of every ball, k = min(selected, K) from shapes.

    Args:
        score: (P, K) ball scores (``ball_scores``).
        ball_valid: (P, K) bool, which ball places of the cloud hold a ball (None: all).
        balls: (P, K) global ball of every ball place (``ball_index``).
        selected: k, a Python int from the config (never a tensor value: static shapes).

    Returns:
        (P, k) global balls selected and (P, k) bool whether each is a real ball (None: all are).
    """
    places = score.shape[1]  # K: an int, a SymInt under torch.export, a traced 0-dim tensor under torch.jit.trace
    k = torch.clamp(places, max=selected) if isinstance(places, Tensor) else torch.sym_min(selected, places)
    with torch.no_grad():
        if ball_valid is not None:
            score = score.masked_fill(~ball_valid, -torch.inf)  # absent balls are never chosen over real ones
        top = score.topk(k, dim=1).indices  # (P, k) ball places
    chosen = balls.gather(1, top)  # (P, k)
    return chosen, None if ball_valid is None else ball_valid.gather(1, top)


def additive(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask as an additive attention bias: 0 where True, -inf where False."""
    return torch.zeros_like(valid, dtype=dtype).masked_fill(~valid, -torch.inf)


class BallSparseAttention(nn.Module):
    """The three gated branches of the module docstring, for all balls of a packed batch at once.

    ``q`` is the one query projection of all branches, ``kv`` the one key-value projection of points
    and summaries, ``gate`` gives the 3 * H gates (``BRANCHES`` order, heads within), ``proj`` is W_o.
    """

    def __init__(self, dim: int, num_heads: int, selected: int) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads  # Python ints: no traced sizes
        self.selected = selected
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.gate = nn.Linear(dim, 3 * num_heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, h: Tensor, s: Tensor, layout: PatchLayout) -> Tensor:
        """(N, C) normalised points and (P * Q, C) their balls' summaries -> (N, C) attention outputs."""
        whole = layout.whole
        c = self.dim
        p, length = whole.patch_index.shape
        q = self.heads_first(gather_rows(self.q(h), whole.patch_index))  # (P, H, L, d); padded slots hold row 0
        kv = gather_rows(self.kv(h), whole.patch_index)  # (P, L, 2C)
        kv_sum = gather_rows(gather_rows(self.kv(s), layout.sub_index), whole.patch_cloud)  # (P, S, 2C)
        point_bias, summary_bias = split_key_bias(whole.key_bias, length)  # (P, 1, 1, L), (P, 1, 1, S) or None
        point_valid = None if point_bias is None else torch.isfinite(point_bias[:, 0, 0])  # (P, L)

        o_cmp, prob = self.compressed(q, kv_sum.to(q.dtype), summary_bias)  # (P, H, L, d), (P, H, L, S)
        chosen, chosen_valid = self.select(prob.detach(), point_valid, summary_bias, layout)  # 2 x (P, k)
        o_sel = self.selected_attention(q, kv, chosen, chosen_valid, point_valid)  # (P, H, L, d)
        k_loc, v_loc = (self.heads_first(t) for t in kv.split(c, dim=-1))  # 2 x (P, H, L, d)
        loc_bias = None if point_bias is None else point_bias.to(q.dtype)
        o_loc = F.scaled_dot_product_attention(q, k_loc, v_loc, attn_mask=loc_bias)  # (P, H, L, d), own ball

        # Gates per point and head (NSA's gated output), then back to the packed rows.
        g = torch.sigmoid(self.gate(h))  # (N, 3H)
        g = gather_rows(g, whole.patch_index).view(p, length, 3, self.num_heads)  # (P, L, 3, H)
        g = g.permute(2, 0, 3, 1)[..., None]  # (3, P, H, L, 1)
        o = g[0] * o_cmp + g[1] * o_sel + g[2] * o_loc  # (P, H, L, d)
        o = o.transpose(1, 2).reshape(p * length, c)  # (P * L, C)
        return self.proj(gather_rows(o, whole.point_slot))  # (N, C), padded slots dropped

    def heads_first(self, t: Tensor) -> Tensor:
        """(P, T, C) -> (P, H, T, d)."""
        return t.view(t.shape[0], t.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def compressed(self, q: Tensor, kv_sum: Tensor, summary_bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """The compressed branch: queries (P, H, L, d) over the (P, S, 2C) summary keys and values of their
        cloud, one softmax. Returns the outputs (P, H, L, d) and the probabilities (P, H, L, S)."""
        k_sum, v_sum = (self.heads_first(t) for t in kv_sum.split(self.dim, dim=-1))  # 2 x (P, H, S, d)
        logits = q @ k_sum.transpose(-1, -2) / math.sqrt(self.head_dim)  # (P, H, L, S)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # at least float32 under autocast
        if summary_bias is not None:
            logits = logits + summary_bias.to(logits.dtype)
        prob = torch.softmax(logits, dim=-1)  # (P, H, L, S)
        return prob.to(v_sum.dtype) @ v_sum, prob

    def select(
        self, prob: Tensor, point_valid: Tensor | None, summary_bias: Tensor | None, layout: PatchLayout
    ) -> tuple[Tensor, Tensor | None]:
        """The top-k balls of every ball by its points' compressed probabilities (``ball_scores``,
        ``select_balls``): (P, k) global balls and (P, k) whether each is real (None: all are)."""
        num_supernodes = layout.num_supernodes  # Q summaries per ball
        ball_valid = None
        if summary_bias is not None:  # a ball place holds a ball where any of its summaries is a key
            summary_valid = torch.isfinite(summary_bias[:, 0, 0]).to(prob.dtype)  # (P, S)
            ball_valid = sum_per_ball(summary_valid, num_supernodes) > 0  # (P, K)
        score = ball_scores(prob, point_valid, num_supernodes)  # (P, K)
        return select_balls(score, ball_valid, ball_index(layout), self.selected)

    def selected_attention(
        self, q: Tensor, kv: Tensor, chosen: Tensor, chosen_valid: Tensor | None, point_valid: Tensor | None
    ) -> Tensor:
        """The selected branch: queries (P, H, L, d) over all points of their k chosen balls, one softmax.

        ``kv`` (P, L, 2C) are every ball's keys and values, ``chosen`` (P, k) the balls, ``chosen_valid``
        and ``point_valid`` (P, L) the masks of absent balls and padded slots (None: nothing masked).
        """
        p, k = chosen.shape
        length = kv.shape[1]
        kv_sel = gather_rows(kv, chosen).view(p, k * length, 2 * self.dim)  # (P, k * L, 2C)
        k_sel, v_sel = (self.heads_first(t) for t in kv_sel.split(self.dim, dim=-1))  # 2 x (P, H, k * L, d)
        bias = None
        if point_valid is not None:
            key_ok = gather_rows(point_valid, chosen)  # (P, k, L): real slots of the chosen balls
            if chosen_valid is not None:
                key_ok = key_ok & chosen_valid[..., None]
            bias = additive(key_ok.view(p, 1, 1, k * length), q.dtype)  # (P, 1, 1, k * L)
        return F.scaled_dot_product_attention(q, k_sel, v_sel, attn_mask=bias)  # (P, H, L, d)


class NSABlock(nn.Module):
    """One pre-norm block: summaries pooled from the normalised input, sparse attention with residual, MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.width
        self.norm1 = nn.LayerNorm(dim)
        self.pool = SupernodePool(dim, config.pooling)
        self.attn = BallSparseAttention(dim, config.num_heads, config.nsa_settings.selected)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), dim)

    def forward(self, x: Tensor, layout: PatchLayout) -> Tensor:
        whole = layout.whole
        h = self.norm1(x)  # (N, C)
        s = self.pool(h, whole.sub_slots, whole.sub_count)  # (P * Q, C) ball summaries
        x = x + self.attn(h, s, layout)
        return x + self.mlp(self.norm2(x))


class NSABackbone(nn.Module):
    """Erwin-NSA: ``config.depth`` blocks of ball sparse attention (module docstring), on MSPT's layout.

    The whole cloud runs at once (mspt runs this backbone on the anchors): ``chunk_points`` is accepted
    and ignored. With two trees (``rotate_trees``) block l attends in the balls of tree ``l % 2``.
    """

    def __init__(self, config: ModelConfig, in_features: int) -> None:
        super().__init__()
        self.config = config
        self.embed = Embedding(in_features, config.width, config.fourier_features)  # (N, F) -> (N, C), row-wise
        self.blocks = nn.ModuleList(NSABlock(config) for _ in range(config.depth))
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
        """(N, C) embedded points -> (N, C) features, same rows (``positions`` and ``chunk_points`` unused)."""
        for index, block in enumerate(self.blocks):
            tree = index % trees.count
            reorder, restore = trees.reorder[tree], trees.restore[tree]
            xt = x if reorder is None else gather_rows(x, reorder)  # (N, C) in this tree's order
            if self.config.checkpointing and torch.is_grad_enabled():
                xt = checkpoint(block, xt, layout, use_reentrant=False)
            else:
                xt = block(xt, layout)
            x = xt if restore is None else gather_rows(xt, restore)
        return x
