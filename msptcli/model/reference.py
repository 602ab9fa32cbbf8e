"""A dense reference of PMSA: full attention with an explicit block mask, one cloud at a time.

Slow (O(N^2) memory) and written for clarity, with plain matrix products
instead of ``scaled_dot_product_attention``, an explicit Python loop over
sub-runs for pooling and no padding at all. The tests check that the packed,
padded, batched MSPT computes exactly this.

For a cloud of n points cut into K patches and K * Q sub-runs, the tokens are
[points ; supernodes] and the mask M of Eq. 6 is

    M[i, j]     = patch(i) == patch(j)     point i, point j
    M[i, n + s] = sub-run s is not empty   point i, supernode s
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from msptcli.model.layout import cloud_cut
from msptcli.model.mspt import MSPT, MSPTBlock
from msptcli.model.pmsa import SupernodePool
from msptcli.model.spacetime import SpaceTimeMSPT, TimeLevels


def dense_forward(model: MSPT, features: Tensor, sizes: list[int]) -> Tensor:
    """``model`` applied to each cloud separately with dense masked attention; (N, out) packed."""
    return torch.cat([_dense_cloud(model, f) for f in features.split(sizes)])


def _cloud_patches(config, f: Tensor):  # type: ignore[no-untyped-def]
    """The patch of every point (n,) and the sub-run bounds of a cloud with inputs ``f`` (uniform, or adaptive
    from the inputs)."""
    cut = cloud_cut(f.shape[0], config, f)
    bounds = torch.from_numpy(cut.bounds())
    patch = torch.repeat_interleave(torch.arange(len(cut)), bounds[1:] - bounds[:-1])  # (n,)
    return patch, cut.sub_bounds(int(math.log2(config.num_supernodes)))


def _dense_cloud(model: MSPT, f: Tensor) -> Tensor:
    patch, sub_bounds = _cloud_patches(model.config, f)
    x = model.embed(f)
    for block in [*model.anchor_blocks, *model.blocks]:
        x = _dense_block(block, x, patch, sub_bounds)
    return model.head(model.norm(x))


def dense_spacetime_forward(model: SpaceTimeMSPT, features: Tensor, sizes: list[int], levels: TimeLevels) -> Tensor:
    """``model`` (time attention, ``model/spacetime.py``) applied to each cloud separately: level tokens from
    the columns ``levels`` names, time attention written out head by head, each level's spatial block the
    dense masked one above; (N, out) packed."""
    return torch.cat([_dense_spacetime_cloud(model, f, levels) for f in features.split(sizes)])


def _dense_spacetime_cloud(model: SpaceTimeMSPT, f: Tensor, levels: TimeLevels) -> Tensor:
    patch, sub_bounds = _cloud_patches(model.config, f)
    shared = f[:, list(levels.shared)]
    x = [model.embed_now(torch.cat([shared, f[:, list(levels.current)]], dim=1))]
    for j, past in enumerate(levels.past):
        x.append(model.embed_past(torch.cat([shared, f[:, list(past)]], dim=1)) + model.lag[j])
    for block in model.blocks:
        x = _dense_time(block.norm_t, block.time, x)
        x = [_dense_block(block.space, level, patch, sub_bounds) for level in x]
    return model.head(model.norm(x[0]))


def _dense_time(norm, attn, x: list[Tensor]) -> list[Tensor]:  # type: ignore[no-untyped-def]
    """x_i,: + TimeAttn(LN(x_i,:)) with every point's T levels as its only keys."""
    c = x[0].shape[1]
    h = [norm(level) for level in x]  # T x (n, C)
    w_q, w_k, w_v = attn.qkv.weight.split(c)
    b_q, b_k, b_v = attn.qkv.bias.split(c)
    d = c // attn.num_heads
    out: list[list[Tensor]] = [[] for _ in x]
    for head in range(attn.num_heads):
        cols = slice(head * d, (head + 1) * d)
        qs = [F.linear(level, w_q[cols], b_q[cols]) for level in h]
        ks = [F.linear(level, w_k[cols], b_k[cols]) for level in h]
        vs = [F.linear(level, w_v[cols], b_v[cols]) for level in h]
        for a, qa in enumerate(qs):  # level a's query against every level b of the same point
            scores = torch.stack([(qa * kb).sum(-1) for kb in ks], dim=1) / math.sqrt(d)  # (n, T)
            weights = torch.softmax(scores, dim=1)
            out[a].append(sum(weights[:, b, None] * vb for b, vb in enumerate(vs)))
    return [level + attn.proj(torch.cat(parts, dim=-1)) for level, parts in zip(x, out, strict=True)]


def _dense_block(block: MSPTBlock, x: Tensor, patch: Tensor, sub_bounds) -> Tensor:  # type: ignore[no-untyped-def]
    n, c = x.shape
    h = block.norm1(x)
    s = _pool(block.pool, h, sub_bounds)  # (S, C)
    nonempty = torch.from_numpy(sub_bounds[1:] > sub_bounds[:-1])  # (S,)
    tokens = torch.cat([h, s])  # keys/values: [points ; supernodes]
    mask = torch.cat([patch[:, None] == patch[None, :], nonempty[None, :].expand(n, -1)], dim=1)  # (n, n + S)
    w_q, w_k, w_v = block.attn.qkv.weight.split(c)
    b_q, b_k, b_v = block.attn.qkv.bias.split(c)
    heads = block.attn.num_heads
    d = c // heads
    out = []
    for head in range(heads):
        cols = slice(head * d, (head + 1) * d)
        qh = F.linear(h, w_q[cols], b_q[cols])
        kh = F.linear(tokens, w_k[cols], b_k[cols])
        vh = F.linear(tokens, w_v[cols], b_v[cols])
        scores = (qh @ kh.T) / math.sqrt(d)
        scores = scores.masked_fill(~mask, -torch.inf)
        out.append(torch.softmax(scores, dim=-1) @ vh)
    x = x + block.attn.proj(torch.cat(out, dim=-1))
    return x + block.mlp(block.norm2(x))


def _pool(pool: SupernodePool, h: Tensor, sub_bounds) -> Tensor:  # type: ignore[no-untyped-def]
    rows = []
    for start, end in itertools.pairwise(sub_bounds):
        part = h[start:end]
        if len(part) == 0:
            rows.append(torch.zeros_like(h[0]))
        elif pool.kind == "mean":
            rows.append(part.mean(dim=0))
        elif pool.kind == "max":
            rows.append(part.max(dim=0).values)
        else:
            weight = torch.softmax(pool.score(part).squeeze(-1), dim=0)
            rows.append((weight[:, None] * part).sum(dim=0))
    return torch.stack(rows)
