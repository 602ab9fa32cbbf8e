"""From clouds as the user has them to predictions in the same order: the one inference path.

    clouds  --ball_tree_order-->  packed, tree-ordered features + PatchLayout  (pack_clouds)
            --MSPT, in chunks of whole patches, no autograd-->  outputs in tree order
            --unpack-->  outputs in each cloud's own row order                 (predict)

With anchors (anchor-query MSPT) the path is

    anchors --pack_anchors--> tree-ordered anchors  --MSPT.read_anchors, once-->  keys of every block
    queries --nearest anchors--> patch of every tree (or k nearest anchors)
            --MSPT.answer_queries, chunk by chunk--> outputs

and the queries keep their own order (:func:`predict_queries`): a query's output depends on the
anchors and its own features only, so chunks of any size give the same values.

``mspt predict``, validation during training and the verification of exported models all
go through :func:`predict_clouds` / :func:`predict` / :func:`predict_queries`, so what is
validated is what is predicted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from msptcli.device import autocast
from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order
from msptcli.model.anchors import PackedAnchors, pack_anchors
from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchLayout, build_layout
from msptcli.model.network import Network
from msptcli.model.queries import Queries, locate_queries, place_queries

#: Default points per chunk of streaming inference: temporaries of a few hundred MB at width 128.
DEFAULT_CHUNK_POINTS = 1 << 16


@dataclass(frozen=True)
class PackedClouds:
    """Features of several clouds stacked in ball-tree order, with their layout.

    ``order[r]`` is the row, in the concatenation of the clouds as given, of
    packed row ``r``; :meth:`unpack` puts model outputs back in the given order.
    """

    features: Tensor  # (N, F) float32
    layout: PatchLayout
    order: np.ndarray  # (N,) int64

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """(N, ...) rows in tree order -> the same rows in the clouds' own order."""
        out = np.empty_like(packed)
        out[self.order] = packed
        return out


def pack_clouds(
    points: Sequence[np.ndarray],
    features: Sequence[np.ndarray | Tensor],
    config: ModelConfig,
    *,
    orders: Sequence[np.ndarray | None] | None = None,
) -> PackedClouds:
    """Order each cloud by its ball tree and stack the features of all clouds.

    Args:
        points: per cloud, (n_b, 3) coordinates the tree is built on.
        features: per cloud, (n_b, F) model inputs.
        config: the model configuration (it decides the patches).
        orders: per cloud, a ball-tree order already known (e.g. stored by ``prepare``), or None.
    """
    if len(points) != len(features):
        raise InvalidInputError(f"{len(points)} point clouds but {len(features)} feature arrays")
    for b, (p, f) in enumerate(zip(points, features, strict=True)):
        if len(p) != len(f):
            raise InvalidInputError(f"cloud {b}: {len(p)} points but {len(f)} rows of features")
    orders = list(orders) if orders is not None else [None] * len(points)
    missing = [b for b, o in enumerate(orders) if o is None]
    built = ball_tree_order([points[b] for b in missing]) if missing else []
    for b, perm in zip(missing, built, strict=True):
        orders[b] = perm
    sizes = [len(p) for p in points]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    order = np.concatenate([start + np.asarray(o, dtype=np.int64) for start, o in zip(starts, orders, strict=True)])
    stacked = torch.cat([torch.as_tensor(f, dtype=torch.float32) for f in features])
    ordered = stacked[torch.from_numpy(order)]
    return PackedClouds(features=ordered, layout=build_layout(sizes, config, ordered), order=order)


@torch.no_grad()
def predict(
    model: Network,
    packed: PackedClouds,
    *,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
) -> np.ndarray:
    """(N, out_features) float32 outputs of ``model`` on ``packed``, rows in the clouds' own order.

    ``bf16``: autocast to bfloat16 on a GPU (``train.bf16``); ignored on the CPU.
    ``chunk_points``: streaming chunk size (None: all patches at once).
    """
    device = torch.device(device)
    model.eval()
    layout = packed.layout.to(device)
    features = packed.features.to(device, next(model.parameters()).dtype)
    with autocast(device, bf16):
        out = model(features, layout, chunk_points=chunk_points)
    return packed.unpack(out.float().cpu().numpy())


def predict_clouds(
    model: Network,
    points: Sequence[np.ndarray],
    features: Sequence[np.ndarray | Tensor],
    *,
    orders: Sequence[np.ndarray | None] | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
) -> list[np.ndarray]:
    """Per cloud, its (n_b, out_features) predictions in its own row order (see :func:`predict`)."""
    packed = pack_clouds(points, features, model.config, orders=orders)
    out = predict(model, packed, device=device, bf16=bf16, chunk_points=chunk_points)
    return np.split(out, np.cumsum([len(p) for p in points])[:-1])


@torch.no_grad()
def predict_queries(
    model: Network,
    anchor_points: Sequence[np.ndarray],
    anchor_features: Sequence[np.ndarray],
    query_points: Sequence[np.ndarray],
    query_features: Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Per cloud, the (m_b, out_features) float32 predictions of its queries, in their own order.

    The anchors run the blocks once; the queries follow in chunks of ``chunk_points`` (None: all at
    once), so memory is one chunk's whatever the number of queries and time is linear in it.
    ``progress(done, total)``: queries answered, after every chunk.
    """
    device = torch.device(device)
    model.eval()
    dtype = next(model.parameters()).dtype
    anchors = pack_anchors(anchor_points, anchor_features, model.config)
    on_device = anchors.to(device)
    out = np.empty((sum(len(q) for q in query_points), model.out_features), dtype=np.float32)
    done = 0
    with autocast(device, bf16):
        keys, _ = model.read_anchors(on_device.features.to(dtype), on_device.layout, on_device.trees)
        for rows, queries in query_chunks(anchors, query_points, query_features, chunk_points):
            out[rows] = model.answer_queries(keys, on_device.layout, queries.to(device, dtype)).float().cpu().numpy()
            if progress is not None:
                progress(done := done + len(rows), len(out))
    return np.split(out, np.cumsum([len(q) for q in query_points])[:-1])


def query_chunks(
    anchors: PackedAnchors,
    query_points: Sequence[np.ndarray],
    query_features: Sequence[np.ndarray],
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
) -> Iterator[tuple[np.ndarray, Queries]]:
    """The queries of ``anchors``' clouds in chunks of at most ``chunk_points`` (None: one chunk): per chunk, its
    rows among the stacked queries (clouds in order) and its :class:`Queries`, placed among the anchors.

    Chunks hold queries near one another (by their nearest anchor's row, in tree order): a chunk then meets few
    patches or anchor groups, and its padded (slot, key) tensors stay small. A query's output does not depend on
    the other queries, so the order changes nothing but the cost. :func:`predict_queries` and the inputs of an
    exported graph (``data/deploy.py``) both chunk here.
    """
    places = locate_queries(anchors, query_points)  # nearest anchors (packed rows) of every query
    each = [np.asarray(f, dtype=np.float32).reshape(-1, anchors.features.shape[1]) for f in query_features]
    features = each[0] if len(each) == 1 else np.concatenate(each)  # one cloud: read in place, not copied
    if len(features) != len(places):
        raise InvalidInputError(f"{len(places)} query points but {len(features)} rows of query features")
    step = max(len(features) if chunk_points is None else int(chunk_points), 1)
    order = np.argsort(places.rows[:, 0], kind="stable")
    for start in range(0, len(features), step):
        rows = order[start : start + step]
        yield rows, place_queries(anchors, places[rows], features[rows])


def predict_queries_averaged(
    model: Network,
    draws: Sequence[tuple[Sequence[np.ndarray], Sequence[np.ndarray]]],
    query_points: Sequence[np.ndarray],
    query_features: Sequence[np.ndarray],
    progress: Callable[[int, int], None] | None = None,
    **kwargs: Any,
) -> list[np.ndarray]:
    """The mean of :func:`predict_queries` over several draws of anchors, ``[(anchor_points, anchor_features)]``
    (``model.anchors.draws``): per cloud, the (m_b, out_features) float32 mean prediction of its queries.
    ``progress(done, total)``: queries answered over all draws."""
    if not draws:
        raise InvalidInputError("no anchor draw to predict with")
    total: list[np.ndarray] | None = None
    for d, (points, features) in enumerate(draws):
        each = None if progress is None else functools.partial(_of_draws, progress, d, len(draws))
        out = predict_queries(model, points, features, query_points, query_features, progress=each, **kwargs)
        if total is None:
            total = out
        else:
            for t, o in zip(total, out, strict=True):
                t += o  # in place: no third copy of the predictions
    return [t / len(draws) for t in total]


def _of_draws(progress: Callable[[int, int], None], draw: int, draws: int, done: int, total: int) -> None:
    progress(draw * total + done, draws * total)
