"""Parallelized Multi-Scale Attention (PMSA), Curvo, van de Meent and Zhdanov, arXiv 2512.01738.

Notation: N packed points with C channels, P patches padded to L slots, Q
supernodes per patch, S supernodes per cloud (K_b * Q, padded), H heads of
d = C / H channels.

    s_j   = Pool({h_i : i in sub-run j})                          (Eq. 4, supernodes)
    K_p   = [h_i : i in patch p ; s_j : j in the cloud of p]       (Eq. 5, augmented keys)
    o_i   = softmax(q_i K_p^T / sqrt(d) + bias) V_p,  i in patch p  (Eq. 6, one softmax)

Every point attends, in one softmax, to the L points of its own patch and to
the S supernodes of its cloud. All patches go through one
``scaled_dot_product_attention`` call: no Python loop over patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msptcli.model.layers import gather_rows, patch_rows
from msptcli.model.layout import PatchChunk, PatchGroup, PatchLayout


class SupernodePool(nn.Module):
    """Eq. 4: pool every sub-run of points into one supernode.

    ``mean`` (default) and ``max`` have no parameters; ``softmax`` scores each point
    with a learned projection ``w . h_i`` and takes the softmax-weighted mean of its
    sub-run (no bias: a softmax does not change when every score shifts alike).
    Sub-runs are gathered into a padded (s, Ls, C) tensor and reduced with a mask:
    only real points are pooled, an empty sub-run gives a zero vector (it is masked
    out as a key), and the forward pass has no scatter (whose parallel versions in
    some runtimes, e.g. onnxruntime, race on repeated indices).
    """

    def __init__(self, dim: int, kind: str = "mean") -> None:
        super().__init__()
        self.kind = kind
        self.score = nn.Linear(dim, 1, bias=False) if kind == "softmax" else None

    def forward(self, h: Tensor, sub_slots: Tensor, sub_count: Tensor) -> Tensor:
        # h: (n, C) points of whole patches; sub_slots: (s, Ls) rows of each sub-run; sub_count: (s,)
        g = gather_rows(h, sub_slots)  # (s, Ls, C), padded slots hold row 0
        valid = torch.arange(sub_slots.shape[1], device=h.device)[None, :] < sub_count[:, None]  # (s, Ls)
        if self.kind == "max":
            top = g.masked_fill(~valid[..., None], -torch.inf).amax(dim=1)  # (s, C)
            return torch.where(sub_count[:, None] > 0, top, torch.zeros_like(top))
        if self.kind == "softmax":
            score = self.score(g).squeeze(-1)  # (s, Ls), softmax in at least float32 under autocast
            score = score.to(torch.promote_types(score.dtype, torch.float32)).masked_fill(~valid, -torch.inf)
            weight = torch.softmax(score, dim=1).nan_to_num(0.0).to(h.dtype)  # empty sub-runs: all zero
            return (g * weight[..., None]).sum(dim=1)
        sums = (g * valid[..., None].to(h.dtype)).sum(dim=1)  # (s, C)
        return sums / sub_count.clamp(min=1).to(h.dtype)[:, None]


class PMSA(nn.Module):
    """Eq. 5-6: multi-head attention of every point over its patch and all supernodes of its cloud."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def supernode_kv(self, s: Tensor, layout: PatchLayout) -> tuple[Tensor, Tensor]:
        """Keys and values of every cloud's supernodes: 2 x (B, S, C), computed once per block."""
        c = s.shape[-1]
        w, b = self.qkv.weight[c:], self.qkv.bias[c:]
        kv = gather_rows(F.linear(s, w, b), layout.sub_index)  # (B, S, 2C)
        k, v = kv.split(c, dim=-1)
        return k, v

    def forward(self, h: Tensor, chunk: PatchChunk, sn_kv: tuple[Tensor, Tensor]) -> Tensor:
        """Attention output of the chunk's points.

        Args:
            h: (n, C) normalised features of the chunk's points.
            chunk: the chunk's patches (``layout.whole`` for a whole batch).
            sn_kv: the supernode keys and values of every cloud, from ``supernode_kv``.

        Returns:
            (n, C) outputs of the points.
        """
        c = h.shape[1]
        if chunk.groups and not torch.jit.is_tracing():
            return self._by_groups(h, chunk, sn_kv)
        p, length = chunk.patch_index.shape
        qkv = patch_rows(self.qkv(h), chunk)  # (p, L, 3C)
        q, k, v = qkv.split(c, dim=-1)  # 3 x (p, L, C)
        o = self.attend(q, k, v, chunk, sn_kv).reshape(p * length, c)  # (p * L, C)
        return o if chunk.exact else gather_rows(o, chunk.point_slot)  # (n, C), padding dropped

    def _by_groups(self, h: Tensor, chunk: PatchChunk, sn_kv: tuple[Tensor, Tensor]) -> Tensor:
        """Eq. 6 for patches of very different sizes (adaptive): each group of patches of about one size
        padded to its own longest, not to the largest patch of the chunk. The same softmax per point."""
        c = h.shape[1]
        rows = self.qkv(h)  # (n, 3C)
        outs = []
        for group in chunk.groups:
            q, k, v = gather_rows(rows, group.patch_index).split(c, dim=-1)  # 3 x (g, Lg, C)
            outs.append(self.attend(q, k, v, group, sn_kv).reshape(-1, c))  # (g * Lg, C)
        return gather_rows(torch.cat(outs), chunk.group_slot)  # (n, C), padding dropped

    def patch_kv(self, h: Tensor, chunk: PatchChunk) -> Tensor:
        """Keys and values of the chunk's points, patch by patch: (p, L, 2C), for queries to read."""
        return patch_rows(self.point_kv(h), chunk)

    def attend_queries(self, hq: Tensor, kv: Tensor, chunk: PatchChunk, sn_kv: tuple[Tensor, Tensor], groups) -> Tensor:  # type: ignore[no-untyped-def]
        """Attention output of query points that read the chunk's points (anchors) without being read.

        Each query attends, in one softmax, to the points of its patch and the supernodes of its
        cloud: the keys of a point of that patch, with the query's own projection (``model/queries.py``).

        Args:
            hq: (m, C) normalised features of the queries.
            kv: (p, L, 2C) keys and values of the anchors of every patch, from ``patch_kv``.
            chunk: the anchors' patches.
            sn_kv: the supernode keys and values of every cloud, from ``supernode_kv``.
            groups: the queries grouped by patch (``QueryGroups``, each group reading ``groups.patch``).

        Returns:
            (m, C) outputs of the queries.
        """
        c = hq.shape[1]
        q = gather_rows(F.linear(hq, self.qkv.weight[:c], self.qkv.bias[:c]), groups.slots)  # (G, T, C)
        k, v = gather_rows(kv, groups.patch).split(c, dim=-1)  # 2 x (G, L, C): every group its patch's keys
        bias = None if chunk.key_bias is None else gather_rows(chunk.key_bias, groups.patch)[:, 0]  # (G, 1, L + S)
        o = self.attend(q, k, v, chunk, sn_kv, key_bias=bias, cloud=gather_rows(chunk.patch_cloud, groups.patch),
                        per_cloud=groups.per_cloud, first_cloud=groups.first_cloud)  # (G, T, C)  # fmt: skip
        return gather_rows(o.reshape(-1, c), groups.query_slot)  # (m, C), padded slots dropped

    def point_kv(self, h: Tensor) -> Tensor:
        """Keys and values of points (anchors) row by row: (n, 2C), for queries that read their nearest anchors."""
        c = h.shape[1]
        return F.linear(h, self.qkv.weight[c:], self.qkv.bias[c:])

    def attend_nearest(  # type: ignore[no-untyped-def]
        self, hq: Tensor, kv: Tensor, chunk: PatchChunk, sn_kv: tuple[Tensor, Tensor], nearest
    ) -> Tensor:
        """Attention output of queries that read their k nearest anchors under a window (``model/queries.py``).

        One softmax per query and head over [its k nearest anchors, logits shifted by log w ; the
        supernodes of its cloud], computed group by group (``NearestKeys``):

            o_i = softmax([q_i k_j / sqrt(d) + log w_ij]_j ; [q_i k_s / sqrt(d)]_s) [v_j ; v_s]

        Args:
            hq: (m, C) normalised features of the queries.
            kv: (N, 2C) keys and values of every anchor, packed rows, from ``point_kv``.
            chunk: the anchors' patches (their clouds and padded supernodes).
            sn_kv: the supernode keys and values of every cloud, from ``supernode_kv``.
            nearest: the queries' ``NearestKeys``.

        Returns:
            (m, C) outputs of the queries.
        """
        c = hq.shape[1]
        q = gather_rows(F.linear(hq, self.qkv.weight[:c], self.qkv.bias[:c]), nearest.groups.slots)  # (G, Lq, C)
        k, v = gather_rows(kv, nearest.key_rows).split(c, dim=-1)  # 2 x (G, U, C)
        o = self.attend(q, k, v, chunk, sn_kv, key_bias=nearest.key_bias, cloud=nearest.group_cloud,
                        per_cloud=nearest.per_cloud)  # (G, Lq, C)  # fmt: skip
        return gather_rows(o.reshape(-1, c), nearest.groups.query_slot)  # (m, C), padded slots dropped

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        chunk: PatchChunk | PatchGroup,
        sn_kv: tuple[Tensor, Tensor],
        key_bias: Tensor | None = None,
        cloud: Tensor | None = None,
        per_cloud: int = 0,
        first_cloud: int = 0,
    ) -> Tensor:
        """Eq. 6 for all patches at once: queries (p, T, C) over [patch keys (p, L, C) ; supernodes of the cloud].

        For groups of queries that are not the layout's patches (queries grouped by patch, or reading their
        nearest anchors): ``cloud`` (p,) is the cloud of every group, ``key_bias`` (p, T or 1, U + S) the whole
        additive bias of every query (or group) over [keys ``k`` (p, U, C) ; supernodes] (None: nothing
        masked), and ``per_cloud`` the groups of every cloud from ``first_cloud`` on, where each of them has
        as many, in order (else 0).
        """
        p, num_q, c = q.shape
        heads, d = self.num_heads, c // self.num_heads

        def heads_first(t: Tensor) -> Tensor:  # (p, T, C) -> (p, H, T, d)
            return t.view(p, t.shape[1], heads, d).transpose(1, 2)

        two_part = None  # (first cloud, clouds, groups per cloud): the one softmax in two kernels
        if _two_kernels(q):
            runs = chunk.cloud_runs if cloud is None else ()
            if runs and all(k_ == runs[0][1] and c_ == runs[0][0] + i for i, (c_, k_) in enumerate(runs)):
                two_part = (runs[0][0], len(runs), runs[0][1])
            elif cloud is not None and per_cloud:
                two_part = (first_cloud, p // per_cloud, per_cloud)
        if two_part is not None:
            # The one softmax in two kernels (the local keys; the cloud's supernodes), merged by log-sum-exp.
            first, b, per_cloud = two_part
            k_sn, v_sn = (t[first : first + b].to(q.dtype) for t in sn_kv)  # 2 x (b, S, C)
            local_bias = sn_bias = None
            if key_bias is not None:  # (p, T or 1, U + S): every query (group) its own bias
                local_bias = key_bias[:, None, :, : k.shape[1]].to(q.dtype)  # (p, 1, T or 1, U)
                sn_bias = key_bias[::per_cloud, None, :1, k.shape[1] :].to(q.dtype)  # (b, 1, 1, S)
            elif cloud is None and chunk.key_bias is not None:
                local_bias = chunk.key_bias[..., : k.shape[1]].to(q.dtype)  # (p, 1, 1, L)
                sn_bias = chunk.key_bias[::per_cloud, ..., k.shape[1] :].to(q.dtype)  # (b, 1, 1, S)
            o = TwoPartAttention.apply(
                heads_first(q).unflatten(0, (b, per_cloud)),
                heads_first(k),
                heads_first(v),
                local_bias,
                k_sn.view(b, -1, heads, d).transpose(1, 2),
                v_sn.view(b, -1, heads, d).transpose(1, 2),
                sn_bias,
            )  # (b, K, T, H, d), contiguous: the projection's input is a view of what the backward keeps
            return self.proj(o.view(p, num_q, c))

        k_sn, v_sn = (gather_rows(t, chunk.patch_cloud if cloud is None else cloud) for t in sn_kv)  # 2 x (p, S, C)
        k = torch.cat([k, k_sn.to(k.dtype)], dim=1)  # (p, L + S, C)
        v = torch.cat([v, v_sn.to(v.dtype)], dim=1)
        bias = None if chunk.key_bias is None or cloud is not None else chunk.key_bias.to(q.dtype)
        if key_bias is not None:  # (p, 1, T or 1, U + S)
            bias = key_bias.to(q.dtype)[:, None]
        o = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), attn_mask=bias)
        return self.proj(o.transpose(1, 2).reshape(p, num_q, c))  # (p, T, C)


#: The CPU flash-attention kernels that return their log-sum-exp, and their backward (private aten ops).
_CPU_FLASH = hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward")


def _two_kernels(q: Tensor) -> bool:
    """Whether Eq. 6 runs as two CPU flash-attention kernels merged by their log-sum-exp (``TwoPartAttention``):
    on the CPU, outside tracing and compiling (an exported graph keeps the one fused kernel)."""
    return _CPU_FLASH and q.device.type == "cpu" and not torch.jit.is_tracing() and not torch.compiler.is_compiling()


class TwoPartAttention(torch.autograd.Function):
    """Eq. 6, one softmax over [patch keys ; supernodes of the cloud], as two attention kernels.

    With o_1, l_1 the output and log-sum-exp of a query over its patch's keys and o_2, l_2 over its
    cloud's supernodes, the softmax over both is exactly

        l = log(e^l_1 + e^l_2),   o = e^(l_1 - l) o_1 + e^(l_2 - l) o_2.

    The supernode part batches all queries of a cloud against its S supernodes, so no patch holds a
    copy of the supernode keys and values, and the backward saves only the patch keys. The backward
    is that of flash attention for each part, given the merged o and l (its probabilities are then
    the joint softmax's): the gradients of the one softmax, summed over the parts for the queries.

    Shapes: q (B, K, H, T, d) the queries of K patches (or query groups) of each of B clouds; k, v
    (B*K, H, L, d) the patch keys (a group's keys); k_sn, v_sn (B, H, S, d); the biases (B*K, 1, 1, L)
    or, every query its own, (B*K, 1, T, L), and (B, 1, 1, S), or None. A query whose local keys are
    all masked (the kernel gives it l_1 = 0 and o_1 = 0) is given l_1 = -inf: the supernodes alone.
    The output is (B, K, T, H, d), contiguous: heads last, as the output projection reads it.
    """

    @staticmethod
    def forward(ctx, q, k, v, local_bias, k_sn, v_sn, sn_bias):  # type: ignore[no-untyped-def]
        per_cloud = q.shape[1]
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        o1, l1 = flash(q.flatten(0, 1), k, v, 0.0, False, attn_mask=local_bias)  # (BK, H, T, d), (BK, H, T)
        o2, l2 = flash(_by_cloud(q), k_sn, v_sn, 0.0, False, attn_mask=sn_bias)  # (B, H, K T, d), (B, H, K T)
        o1, l1 = o1.view(q.shape), l1.view(q.shape[:-1])
        if local_bias is not None and local_bias.shape[2] > 1:  # per-query biases: a row may mask every local key
            empty = torch.isneginf(local_bias).all(-1).unflatten(0, q.shape[:2])  # (B, K, 1, T)
            l1 = l1.masked_fill(empty, float("-inf"))  # the kernel gives such a row l = 0; its weight is 0
        o2, l2 = _by_patch(o2, per_cloud), _by_patch(l2[..., None], per_cloud)[..., 0]
        lse = torch.logaddexp(l1, l2)  # (B, K, H, T), float32 at least
        o = torch.empty((*q.shape[:2], q.shape[3], q.shape[2], q.shape[4]), dtype=q.dtype, device=q.device)
        o = o.transpose(2, 3)  # (B, K, H, T, d) view of (B, K, T, H, d) storage
        o.copy_(o1 * torch.exp(l1 - lse)[..., None] + o2 * torch.exp(l2 - lse)[..., None])
        ctx.save_for_backward(q, k, v, local_bias, k_sn, v_sn, sn_bias, o, lse)
        return o.transpose(2, 3)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[no-untyped-def]
        q, k, v, local_bias, k_sn, v_sn, sn_bias, o, lse = ctx.saved_tensors
        backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward
        grad = grad.transpose(2, 3)  # (B, K, H, T, d), as o
        dq1, dk, dv = backward(
            grad.flatten(0, 1), q.flatten(0, 1), k, v, o.flatten(0, 1), lse.flatten(0, 1), 0.0, False,
            attn_mask=local_bias,
        )  # fmt: skip
        dq2, dk_sn, dv_sn = backward(
            _by_cloud(grad), _by_cloud(q), k_sn, v_sn, _by_cloud(o), _by_cloud(lse[..., None])[..., 0], 0.0, False,
            attn_mask=sn_bias,
        )  # fmt: skip
        dq = dq1.view(q.shape) + _by_patch(dq2, q.shape[1])
        return dq, dk, dv, None, dk_sn, dv_sn, None


def _by_cloud(t: Tensor) -> Tensor:
    """(B, K, H, T, D) -> (B, H, K T, D): the queries of every cloud in one row of the batch."""
    b, per_cloud, heads, num_q, d = t.shape
    return t.transpose(1, 2).reshape(b, heads, per_cloud * num_q, d)


def _by_patch(t: Tensor, per_cloud: int) -> Tensor:
    """(B, H, K T, D) -> (B, K, H, T, D), the inverse of :func:`_by_cloud` (a view)."""
    b, heads, rows, d = t.shape
    return t.view(b, heads, per_cloud, rows // per_cloud, d).transpose(1, 2)
