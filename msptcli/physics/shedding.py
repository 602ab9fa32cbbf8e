"""Drag, lift and Strouhal number of a 2D bluff body from point fields on a planar mesh (vortex shedding).

The data are the transient cases (``shared/data/transient``, README there): the z = 0 plane of a
one-cell-thick OpenFOAM mesh, quads with point fields ``U`` and kinematic ``p``, the body a hole in it.

**Body.** The body's boundary edges come from ``geometry/outline.py`` (:func:`~msptcli.geometry.outline.body_edges`),
oriented so that the fluid lies on the right of each edge ``a -> b``: with ``(dx, dy)`` the edge vector
and ``l`` its length the unit normal of the body pointing into the fluid is ``n = (dy, -dx) / l``.

**Forces.** Per unit depth the fluid pushes on the body with::

    F = -∮ p n dl + ∮ rho nu (∇U + ∇Uᵀ) n dl,    (∇U)_ij = ∂U_i/∂x_j
    Cd = F_x / q,   Cl = F_y / q,   q = 1/2 rho U² L

(``rho`` = 1 for kinematic fields; L the reference length, e.g. D, which is what OpenFOAM's
``forceCoeffs`` with ``Aref = D·dz`` gives for a slab of thickness dz). On a no-slip wall U = 0,
so the tangential derivatives vanish, ``∇U = (∂U/∂n) nᵀ`` and continuity makes ``n·∂U/∂n = 0``:
the viscous traction is the wall shear stress ``rho nu ∂U/∂n``. ``∂U/∂n`` at a body point ``b`` is
the one-sided second-order difference through the next two points ``b → q1 → q2`` of the grid
line leaving the wall (``q1`` the neighbour most aligned with the normal, ``q2`` the neighbour of
``q1`` that best continues the line), at wall distances ``h1 = (x_q1 - x_b)·n`` and ``h2``::

    ∂U/∂n ≈ -(h1 + h2)/(h1 h2) U_b + h2/(h1 (h2 - h1)) U_q1 - h1/(h2 (h2 - h1)) U_q2

(the slope at the wall of the parabola through the three values; first order, ``(U_q1 - U_b)/h1``,
where no ``q2`` lies further out). The normal at a point is the normalised sum of its two edges' ``n l``.
Both integrals use the trapezoid rule on every edge. At the 6 x 48 snapshots of the transient
cases this gives the solver's Cd within 0.0065 and Cl within 0.0035 (the viscous part is 0.04-0.24
of Cd); the wall gradient of pyvista's ``compute_derivative`` (first order) is off by up to 0.015.

**Shedding.** With ``c(t) = Cl(t) - mean(Cl)`` (the plain mean of the samples), the zero
up-crossings ``c_k < 0 <= c_{k+1}`` are located by linear interpolation between samples, and the
period is their mean spacing, ``T = (t_last - t_first) / (n_crossings - 1)``, so
``St = L / (T U)``. A cycle mean (``Cd_mean``) is the time-weighted trapezoid mean of the
piecewise-linear signal from the first to the last up-crossing: whole lift cycles only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.outline import planar_edges

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["body_forces", "cycle_mean", "shedding_summary", "strouhal", "up_crossings"]


# --- forces -------------------------------------------------------------------------------------------------


def body_forces(
    mesh: pv.DataSet,
    edges: np.ndarray,
    U: np.ndarray,
    p: np.ndarray,
    *,
    nu: float,
    density: float = 1.0,
    velocity: float = 1.0,
    length: float = 1.0,
) -> dict[str, float] | dict[str, np.ndarray]:
    """Drag and lift coefficients of the body per unit depth, pressure and viscous parts (module docstring).

    Args:
        mesh: the planar mesh the fields live on.
        edges: the body edges from :func:`~msptcli.geometry.outline.body_edges` (the fluid on their right).
        U: ``(N, 3)`` or ``(N, 2)`` velocity at the mesh points, or ``(T, N, 3)`` for T snapshots.
        p: ``(N,)`` or ``(N, 1)`` pressure at the points, or ``(T, N)`` / ``(T, N, 1)``.
        nu: kinematic viscosity.
        density: ``rho``. Keep 1 for kinematic pressure (p/rho, as OpenFOAM writes it); pass the
            density when ``p`` is in pascals (the shear stress is then ``rho nu ∂U/∂n`` too).
        velocity: the reference speed U in ``q = 1/2 rho U² L``.
        length: the reference length L (the body's frontal height D for the transient cases).

    Returns:
        ``cd``, ``cl`` and their ``_pressure`` and ``_viscous`` parts: floats for one snapshot,
        ``(T,)`` float64 arrays for a batch.

    Raises:
        InvalidInputError: fields or edges of the wrong shape, non-finite fields, reference
            values that are not positive, a body point with no neighbour off the wall.
    """
    for name, value in (("nu", nu), ("density", density), ("velocity", velocity), ("length", length)):
        if not np.isfinite(value) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive number, got {value!r}")
    points, a, b, _, _ = planar_edges(mesh)
    n = len(points)
    e = np.asarray(edges)
    if e.ndim != 2 or e.shape[1] != 2 or len(e) == 0 or e.dtype.kind not in "iu" or e.min() < 0 or e.max() >= n:
        raise InvalidInputError(f"edges must be (E, 2) point indices below {n}, got shape {e.shape}")
    u, pressure, single = _batch_fields(U, p, n)

    xy = points[:, :2]
    d = xy[e[:, 1]] - xy[e[:, 0]]  # (E, 2)
    normal_dl = np.stack([d[:, 1], -d[:, 0]], axis=1)  # n l, into the fluid
    dl = np.linalg.norm(d, axis=1)  # (E,)
    f_pressure = -np.einsum("te,ek->tk", 0.5 * (pressure[:, e[:, 0]] + pressure[:, e[:, 1]]), normal_dl)

    wall, stencil, weights = _wall_stencil(xy, e, a, b)  # (B,), (B, 3), (B, 3)
    dudn = np.einsum("bk,tbkc->tbc", weights, u[:, stencil])  # (T, B, 2)
    slot = np.full(n, -1)
    slot[wall] = np.arange(len(wall))
    shear = 0.5 * (dudn[:, slot[e[:, 0]]] + dudn[:, slot[e[:, 1]]])  # (T, E, 2) mean ∂U/∂n on each edge
    f_viscous = density * nu * np.einsum("tek,e->tk", shear, dl)

    q = 0.5 * density * velocity**2 * length
    parts = {"pressure": f_pressure / q, "viscous": f_viscous / q}
    out = {
        "cd": parts["pressure"][:, 0] + parts["viscous"][:, 0],
        "cl": parts["pressure"][:, 1] + parts["viscous"][:, 1],
    }
    for part, c in parts.items():
        out[f"cd_{part}"], out[f"cl_{part}"] = c[:, 0], c[:, 1]
    return {k: float(v[0]) for k, v in out.items()} if single else out


# --- shedding -----------------------------------------------------------------------------------------------


def up_crossings(times: np.ndarray, cl: np.ndarray) -> np.ndarray:
    """Times of the zero up-crossings of ``cl - mean(cl)``, linearly interpolated between samples."""
    t, c = _signal(times, cl, "cl")
    c = c - c.mean()
    k = np.flatnonzero((c[:-1] < 0) & (c[1:] >= 0))
    return t[k] + (t[k + 1] - t[k]) * (-c[k]) / (c[k + 1] - c[k])


def strouhal(times: np.ndarray, cl: np.ndarray, *, length: float = 1.0, velocity: float = 1.0) -> float:
    """``St = L / (T U)``, T the mean spacing of the lift's zero up-crossings (module docstring).

    NaN when ``cl`` crosses its mean upwards fewer than twice (less than one whole cycle). There is
    no hysteresis: a signal that wobbles about its mean from sample to sample (case 0004's solver
    steps) gives spurious crossings; pass samples a fraction of a period apart.
    """
    crossings = up_crossings(times, cl)
    if len(crossings) < 2:
        return float("nan")
    period = (crossings[-1] - crossings[0]) / (len(crossings) - 1)
    return float(length / (period * velocity))


def cycle_mean(times: np.ndarray, values: np.ndarray, cl: np.ndarray) -> float:
    """Time mean of ``values`` over the whole lift cycles, first to last up-crossing of ``cl``.

    ``values`` is taken piecewise linear between the samples and integrated with the trapezoid rule
    between the two crossing times. NaN when ``cl`` has fewer than two up-crossings.

    The weighting matters for unevenly spaced samples: the transient ``params.json`` means are plain
    means of the adaptive solver steps, which are shorter in some phases of the cycle, so their
    ``Cl_mean`` differs from this time mean by up to 0.05 (``Cd_mean`` by up to 0.002).
    """
    crossings = up_crossings(times, cl)
    t, v = _signal(times, values, "values")
    if len(crossings) < 2:
        return float("nan")
    start, end = crossings[0], crossings[-1]
    inside = (t > start) & (t < end)
    tt = np.concatenate([[start], t[inside], [end]])
    vv = np.concatenate([[np.interp(start, t, v)], v[inside], [np.interp(end, t, v)]])
    return float(np.sum(0.5 * (vv[1:] + vv[:-1]) * np.diff(tt)) / (end - start))


def shedding_summary(
    times: np.ndarray, cd: np.ndarray, cl: np.ndarray, *, length: float = 1.0, velocity: float = 1.0
) -> dict[str, float]:
    """The numbers of a shedding record, as the transient README defines them.

    Returns:
        ``St`` (:func:`strouhal`); ``Cd_mean``, ``Cl_mean`` (:func:`cycle_mean`); ``Cl_amp``, half the
        peak-to-peak of all the samples; ``Cl_rms``, the root cycle mean of ``(Cl - Cl_mean)²``;
        ``n_cycles``, the whole lift cycles (up-crossings - 1, 0 if none). NaN where there is no
        whole cycle.
    """
    _, c = _signal(times, cl, "cl")
    cl_mean = cycle_mean(times, c, c)
    return {
        "St": strouhal(times, c, length=length, velocity=velocity),
        "Cd_mean": cycle_mean(times, cd, c),
        "Cl_mean": cl_mean,
        "Cl_amp": float(0.5 * (c.max() - c.min())),
        "Cl_rms": float(np.sqrt(cycle_mean(times, (c - cl_mean) ** 2, c))),
        "n_cycles": max(len(up_crossings(times, c)) - 1, 0),
    }


# --- helpers ------------------------------------------------------------------------------------------------


def _wall_stencil(
    xy: np.ndarray, edges: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body points ``(B,)``, their stencils ``b, q1, q2`` ``(B, 3)`` and the weights giving ``∂U/∂n`` ``(B, 3)``."""
    n = len(xy)
    wall = np.unique(edges)
    on_wall = np.zeros(n, dtype=bool)
    on_wall[wall] = True
    d = xy[edges[:, 1]] - xy[edges[:, 0]]
    normal = np.zeros((n, 2))
    np.add.at(normal, edges[:, 0], np.stack([d[:, 1], -d[:, 0]], 1))
    np.add.at(normal, edges[:, 1], np.stack([d[:, 1], -d[:, 0]], 1))
    normal = normal[wall] / np.linalg.norm(normal[wall], axis=1, keepdims=True)  # (B, 2)

    # The point graph: both directions of every cell edge, sorted by the point they leave.
    src, dst = np.concatenate([a, b]), np.concatenate([b, a])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(n + 1))

    def most_aligned(origin: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """For each origin, its neighbour off the wall most aligned with ``direction``; -1 for none into the fluid."""
        count = start[origin + 1] - start[origin]
        owner = np.repeat(np.arange(len(origin)), count)
        first = np.repeat(start[origin] - (np.cumsum(count) - count), count)
        nb = dst[first + np.arange(count.sum())]  # the neighbours of each origin, origin by origin
        v = xy[nb] - xy[origin[owner]]
        score = np.einsum("ij,ij->i", v, direction[owner]) / np.linalg.norm(v, axis=1)
        score[on_wall[nb]] = -np.inf
        best = np.full(len(origin), -1)
        best_score = np.full(len(origin), -np.inf)
        rank = np.lexsort((score, owner))  # by owner, then score: the last of each owner is its best
        last = rank[np.r_[owner[rank][1:] != owner[rank][:-1], True]]
        best[owner[last]], best_score[owner[last]] = nb[last], score[last]
        best[best_score <= 0] = -1  # not into the fluid
        return best

    q1 = most_aligned(wall, normal)
    if (q1 < 0).any():
        i = int(wall[np.flatnonzero(q1 < 0)[0]])
        raise InvalidInputError(f"body point {i} has no neighbour off the wall to take the wall shear from")
    line = xy[q1] - xy[wall]
    q2 = most_aligned(q1, line / np.linalg.norm(line, axis=1, keepdims=True))
    h1 = np.einsum("ij,ij->i", xy[q1] - xy[wall], normal)
    h2 = np.einsum("ij,ij->i", xy[np.maximum(q2, 0)] - xy[wall], normal)
    second = (q2 >= 0) & (h2 > 1.1 * h1)
    h2 = np.where(second, h2, 2 * h1)  # any value: its weights are replaced below
    weights = np.stack([-(h1 + h2) / (h1 * h2), h2 / (h1 * (h2 - h1)), -h1 / (h2 * (h2 - h1))], axis=1)
    weights[~second] = np.stack([-1 / h1, 1 / h1, 0 * h1], axis=1)[~second]
    return wall, np.stack([wall, q1, np.where(second, q2, q1)], axis=1), weights


def _batch_fields(U: np.ndarray, p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``U`` as ``(T, N, 2)`` and ``p`` as ``(T, N)`` float64, and whether one snapshot was given."""
    u = np.asarray(U, dtype=np.float64)
    pr = np.asarray(p, dtype=np.float64)
    single = u.ndim == 2
    if single:
        u, pr = u[None], pr[None]
    if pr.ndim == 3 and pr.shape[2] == 1:
        pr = pr[..., 0]
    if u.ndim != 3 or u.shape[1] != n or u.shape[2] not in (2, 3):
        raise InvalidInputError(f"U needs shape ({n}, 3) or (T, {n}, 3) (one vector per point), got {np.shape(U)}")
    if pr.shape != u.shape[:2]:
        raise InvalidInputError(f"p needs shape {u.shape[:2] if not single else (n,)} to match U, got {np.shape(p)}")
    if not (np.isfinite(u).all() and np.isfinite(pr).all()):
        raise InvalidInputError("U or p is not finite")
    return u[..., :2], pr, single


def _signal(times: np.ndarray, values: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``times`` and ``values`` as float64 ``(n,)``, checked: the same length, times increasing."""
    t = np.asarray(times, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(t) != len(v):
        raise InvalidInputError(f"times and {name} need the same length, got {len(t)} and {len(v)}")
    if len(t) and (np.diff(t) <= 0).any():
        raise InvalidInputError("times must increase")
    return t, v
