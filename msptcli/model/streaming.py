"""Streaming inference: the network layer by layer over chunks of patches.

Within a block a point needs only its own patch and the supernodes of its
cloud, and the supernodes depend on the block's input alone. So each block
first pools the supernodes of every patch (chunk by chunk: a sub-run never
crosses a patch), then updates the points chunk by chunk, in place. Peak memory
is one (N, C) feature buffer plus the temporaries of one chunk, whatever the
depth; the result equals ``MSPT.forward`` up to floating-point reordering.
"""

from __future__ import annotations

import torch
from torch import Tensor

from msptcli.model.layout import PatchLayout
from msptcli.model.mspt import MSPT

#: Default points per chunk: temporaries of a few hundred MB at width 128.
DEFAULT_CHUNK_POINTS = 1 << 16


@torch.no_grad()
def stream_forward(
    model: MSPT,
    features: Tensor,
    layout: PatchLayout,
    conditions: Tensor | None = None,
    *,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
) -> Tensor:
    """Predictions for packed ``features`` (N, F), as ``model(features, layout, conditions)``, in chunks.

    ``chunk_points`` bounds the points per chunk (a chunk always holds at least one whole patch).
    """
    config = model.config
    if config.attention == "full":
        raise ValueError("streaming inference needs PMSA; attention='full' has no patches to stream over")
    n, q = layout.num_points, layout.num_supernodes
    chunks = list(layout.chunks(chunk_points))
    dtype = next(model.parameters()).dtype
    x = torch.empty(n, config.width, dtype=dtype, device=features.device)  # the one (N, C) buffer
    for c in chunks:
        x[c.n0 : c.n1] = model.embed(model.inputs(features, layout, conditions, slice(c.n0, c.n1)))

    z = None
    if model.stream_pool is not None:
        z = torch.empty(layout.num_patches * q, config.width, dtype=dtype, device=features.device)
        for c in chunks:
            z[c.p0 * q : c.p1 * q] = model.stream_pool(x[c.n0 : c.n1], c.sub_slots, c.sub_count)

    for block in model.blocks:
        if block.stream:
            sn_kv = block.attn.supernode_kv(block.norm1(z), layout)
            z_next = torch.empty_like(z)
        else:
            s = torch.empty(layout.num_patches * q, config.width, dtype=dtype, device=features.device)
            for c in chunks:
                s[c.p0 * q : c.p1 * q] = block.supernodes(x[c.n0 : c.n1], c)
            sn_kv = block.attn.supernode_kv(s, layout)
            del s
        for c in chunks:
            zc = z[c.p0 * q : c.p1 * q] if block.stream else None
            xc, zc = block.update(x[c.n0 : c.n1], c, sn_kv, zc)
            x[c.n0 : c.n1] = xc
            if block.stream:
                z_next[c.p0 * q : c.p1 * q] = zc
        if block.stream:
            z = z_next

    out = torch.empty(n, config.out_features, dtype=dtype, device=features.device)
    for c in chunks:
        out[c.n0 : c.n1] = model.head(model.norm(x[c.n0 : c.n1]))
    return out
