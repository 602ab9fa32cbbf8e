"""Balanced ball-tree ordering of point clouds.

The tree splits a cloud recursively at the median along the axis of largest
spread. Reading its leaves depth first gives a permutation of the points in
which every subtree is a contiguous run: at depth ``level`` the cloud falls into
``K = 2**level`` runs, run ``a`` covering positions

    [floor(a * n / K), floor((a + 1) * n / K))

so run sizes differ by at most one (``run_boundaries``). MSPT cuts this order
into its K patches; Erwin-style models use every level of it.

The permutation is unique: points are compared by (coordinate along the split
axis, index in the cloud), spreads are computed in the input precision and a
tie between axes goes to the lowest axis. The result therefore does not depend
on the number of threads.

This module is the one Python layer over the compiled core
(``csrc/balltree/balltree.hpp``): it checks shapes, dtypes and devices, and
raises :class:`~msptcli.errors.InvalidInputError` (a ``ValueError``) with the
problem and, in a batch, the cloud's index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from msptcli import _balltree
from msptcli.errors import InvalidInputError

__all__ = [
    "ball_tree_order",
    "default_num_threads",
    "rotation_matrix",
    "run_boundaries",
    "run_boundaries_batch",
    "tree_depth",
]


def ball_tree_order(
    points: Any,
    *,
    offsets: Any = None,
    rotation: Any = None,
    num_threads: int | None = None,
) -> Any:
    """Depth-first leaf order of the balanced ball tree of one or several clouds.

    Args:
        points: the coordinates, as one of
            - an ``(N, D)`` NumPy array or CPU torch tensor, ``D`` in {2, 3}: one
              cloud, or a batch when ``offsets`` is given;
            - a list of ``(N_i, D)`` arrays or tensors: a batch of clouds of
              different sizes.
            float32 and float64 are used as they are (no float64 copy of float32
            input); other real dtypes are converted to float64.
        offsets: with a single array, ``(B + 1,)`` integers: cloud ``b`` is rows
            ``offsets[b]:offsets[b + 1]``. ``None``: the array is one cloud.
        rotation: optional ``(D, D)`` orthogonal matrix ``R``. The tree is then
            built on the rotated cloud ``x @ R.T`` (Erwin's rotated trees); the
            permutation still indexes the original points. See
            :func:`rotation_matrix`.
        num_threads: OpenMP threads; ``None`` uses OpenMP's default (all cores,
            or ``OMP_NUM_THREADS``). The result is the same for any value.

    Returns:
        For an array: an ``(N,)`` int64 permutation of its rows, of the same
        kind as the input (NumPy array or torch tensor). In a batch, positions
        ``offsets[b]:offsets[b + 1]`` hold cloud ``b``'s rows (global row
        numbers), so ``points[perm]`` orders every cloud in place.
        For a list: a list of ``(N_i,)`` int64 permutations, indices within
        each cloud.

    Raises:
        InvalidInputError: wrong shape or dtype, an empty cloud, NaN or Inf
            coordinates, bad offsets or rotation.
    """
    if isinstance(points, (list, tuple)):
        return _order_list(points, rotation=rotation, num_threads=num_threads)
    torch_out = _is_torch(points)
    array = _as_points(points, where="points")
    if offsets is None:
        offsets_array = np.array([0, array.shape[0]], dtype=np.int64)
    else:
        offsets_array = _check_offsets(offsets, array.shape[0])
    perm = _build(array, offsets_array, rotation=rotation, num_threads=num_threads, global_indices=True)
    return _torch_from_numpy(perm) if torch_out else perm


def run_boundaries(n: int, level: int) -> np.ndarray:
    """Bounds of the ``2**level`` runs (subtrees) at depth ``level`` of a cloud of ``n`` points.

    Returns ``(2**level + 1,)`` int64 positions ``floor(a * n / 2**level)``;
    run ``a`` is ``perm[b[a]:b[a + 1]]``. Sizes differ by at most one; beyond
    ``tree_depth(n)`` some runs are empty.
    """
    n, level = _check_level(n, level)
    a = np.arange((1 << level) + 1, dtype=np.int64)
    return (a * n) >> level


def run_boundaries_batch(offsets: Any, level: int) -> np.ndarray:
    """Run bounds at depth ``level`` for every cloud of a batch, as global positions.

    Args:
        offsets: ``(B + 1,)`` cloud offsets, as given to :func:`ball_tree_order`.
        level: depth of the runs.

    Returns:
        ``(B, 2**level + 1)`` int64; row ``b`` is ``offsets[b] + run_boundaries(n_b, level)``.
    """
    offsets_array = _check_offsets(offsets, None)
    _, level = _check_level(1, level)
    sizes = np.diff(offsets_array)
    a = np.arange((1 << level) + 1, dtype=np.int64)
    return offsets_array[:-1, None] + ((a[None, :] * sizes[:, None]) >> level)


def tree_depth(n: int) -> int:
    """Number of split levels of the tree of ``n`` points: ``ceil(log2(n))`` (0 for one point)."""
    if n < 1:
        raise InvalidInputError(f"a ball tree needs at least one point, got n={n}")
    return (int(n) - 1).bit_length()


def default_num_threads() -> int:
    """Threads a build uses when ``num_threads`` is None.

    OpenMP's default (all cores, or ``OMP_NUM_THREADS``); 1 where the extension was
    compiled without OpenMP, and 1 in a process forked after OpenMP started (a
    DataLoader worker): OpenMP's thread pool does not survive ``fork``, so such
    a process builds on one thread rather than hang.
    """
    return int(_balltree.max_threads())


def rotation_matrix(angle: float, *, dim: int = 3, axis: int = 2) -> np.ndarray:
    """Matrix of a rotation by ``angle`` radians: in the plane for ``dim=2``, about ``axis`` for ``dim=3``."""
    c, s = math.cos(angle), math.sin(angle)
    plane = np.array([[c, -s], [s, c]])
    if dim == 2:
        return plane
    if dim != 3 or axis not in (0, 1, 2):
        raise InvalidInputError(f"rotation_matrix needs dim 2 or 3 and axis 0, 1 or 2, got dim={dim} axis={axis}")
    rest = [d for d in range(3) if d != axis]
    r = np.eye(3)
    r[np.ix_(rest, rest)] = plane
    return r


# --- checks and conversions -------------------------------------------------------------------------


def _order_list(clouds: Sequence[Any], *, rotation: Any, num_threads: int | None) -> list[Any]:
    if len(clouds) == 0:
        raise InvalidInputError("the batch is empty: pass at least one cloud")
    arrays = [_as_points(c, where=f"cloud {i}") for i, c in enumerate(clouds)]
    dims = {a.shape[1] for a in arrays}
    if len(dims) > 1:
        raise InvalidInputError(f"all clouds of a batch need the same dimension, got {sorted(dims)}")
    dtype = np.result_type(*arrays)
    sizes = [a.shape[0] for a in arrays]
    for i, n in enumerate(sizes):
        if n == 0:
            raise InvalidInputError(f"cloud {i} is empty")
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    joined = np.concatenate(arrays, axis=0).astype(dtype, copy=False)
    perm = _build(joined, offsets, rotation=rotation, num_threads=num_threads, global_indices=False)
    parts = np.split(perm, offsets[1:-1])
    return [_torch_from_numpy(p) if _is_torch(c) else p for p, c in zip(parts, clouds, strict=True)]


def _build(
    points: np.ndarray, offsets: np.ndarray, *, rotation: Any, num_threads: int | None, global_indices: bool
) -> np.ndarray:
    rot = None if rotation is None else _check_rotation(rotation, points.shape[1])
    threads = 0 if num_threads is None else int(num_threads)
    if threads < 0:
        raise InvalidInputError(f"num_threads must be positive, got {num_threads}")
    perm = np.empty(points.shape[0], dtype=np.int64)
    try:
        _balltree.build_order(points, offsets, rot, threads, global_indices, perm)
    except ValueError as exc:  # the compiled core names the cloud and the point
        raise InvalidInputError(str(exc)) from None
    return perm


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _torch_from_numpy(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(a)


def _as_points(x: Any, *, where: str) -> np.ndarray:
    """A C-contiguous float32/float64 (N, D) view of ``x``, copied only when it must be."""
    if _is_torch(x):
        if x.device.type != "cpu":
            raise InvalidInputError(f"{where} is on {x.device}; the ball tree runs on the CPU: pass .cpu()")
        import torch

        x = x.detach()
        if x.is_complex():
            raise InvalidInputError(f"{where} has complex dtype {x.dtype}; coordinates must be real")
        if x.dtype == torch.bfloat16:  # NumPy has no bfloat16
            x = x.float()
        x = x.resolve_neg().numpy()
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise InvalidInputError(f"{where} has dtype {a.dtype}; coordinates must be real numbers")
    if a.ndim != 2 or a.shape[1] not in (2, 3):
        raise InvalidInputError(f"{where} must have shape (N, 2) or (N, 3), got {tuple(a.shape)}")
    if a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _check_offsets(offsets: Any, total: int | None) -> np.ndarray:
    if _is_torch(offsets):
        offsets = offsets.detach().cpu().numpy()
    o = np.asarray(offsets)
    if o.ndim != 1 or o.shape[0] < 2 or o.dtype.kind not in "iu":
        raise InvalidInputError(
            f"offsets must be a 1-D integer array of B + 1 >= 2 entries, got shape {o.shape} dtype {o.dtype}"
        )
    o = o.astype(np.int64)
    if o[0] != 0:
        raise InvalidInputError(f"offsets must start at 0, got {o[0]}")
    if total is not None and o[-1] != total:
        raise InvalidInputError(f"offsets must end at the number of points {total}, got {o[-1]}")
    steps = np.diff(o)
    if (steps <= 0).any():
        b = int(np.flatnonzero(steps <= 0)[0])
        raise InvalidInputError(f"cloud {b} is empty or has negative size (offsets {o[b]} -> {o[b + 1]})")
    return np.ascontiguousarray(o)


def _check_rotation(rotation: Any, dim: int) -> np.ndarray:
    if _is_torch(rotation):
        rotation = rotation.detach().cpu().numpy()
    r = np.asarray(rotation, dtype=np.float64)
    if r.shape != (dim, dim):
        raise InvalidInputError(f"rotation must have shape ({dim}, {dim}) for {dim}-D points, got {r.shape}")
    if not np.isfinite(r).all() or not np.allclose(r @ r.T, np.eye(dim), atol=1e-6):
        raise InvalidInputError("rotation must be an orthogonal matrix (R @ R.T == I)")
    return np.ascontiguousarray(r)


def _check_level(n: int, level: int) -> tuple[int, int]:
    n, level = int(n), int(level)
    if n < 0:
        raise InvalidInputError(f"n must be non-negative, got {n}")
    if not 0 <= level <= 31:
        raise InvalidInputError(f"level must be in [0, 31], got {level}")
    if n >= 2**31:
        raise InvalidInputError(f"clouds of at most 2^31 - 1 points are supported, got {n}")
    return n, level
