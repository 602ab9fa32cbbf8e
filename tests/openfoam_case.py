"""A tiny real ASCII OpenFOAM case written in Python (no OpenFOAM needed), its decomposed form and our
``.vtu`` layout of the same arrays: the inputs of ``tests/test_openfoam.py``.

The mesh is a block of hexahedra (edge ``H``, float32-exact coordinates) with a box-shaped hole: the
hole's faces are the wall patch ``body``, the block's outer faces the patches ``inlet outlet ground top
sides``. Cells are numbered with x slowest, so the two halves in x are the cells ``0..n0-1`` and
``n0..``: the decomposed form puts them in ``processor0`` and ``processor1``, and every list (cells,
body faces) keeps the order of the whole case. Faces follow OpenFOAM's rules: internal faces first,
upper-triangular (sorted by owner, then neighbour), normals from owner to neighbour; boundary faces
grouped by patch, normals out of the domain (into the body on ``body``).

Fields at time ``t`` (``TIMES``) are smooth functions of the cell (or face) centres times ``1 + t/100``:
``U`` and ``p`` in the cells, and on every patch (``calculated`` with a ``value``, or ``zeroGradient``
on the outlet); ``wallShearStress`` on the body faces (zero elsewhere).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

H = 0.25  # cell edge: every coordinate and centre is exact in float32
SHAPE = (12, 6, 6)  # cells along x, y, z
HOLE = ((4, 8), (2, 4), (1, 3))  # cell index ranges of the body (the hole)
TIMES = ("0", "100")
DOMAIN_PATCHES = {"inlet": "patch", "outlet": "patch", "ground": "wall", "top": "patch", "sides": "patch"}
PATCH_ORDER = ("inlet", "outlet", "ground", "top", "sides", "body")

HEADER = """/*--------------------------------*- C++ -*----------------------------------*\\
  =========                 |
  \\\\      /  F ield         | OpenFOAM: The Open Source CFD Toolbox
   \\\\    /   O peration     | Version:  v1912
    \\\\  /    A nd           | Web:      www.openfoam.com
     \\\\/     M anipulation  |
\\*---------------------------------------------------------------------------*/
FoamFile
{{
    version     2.0;
    format      ascii;
    class       {cls};
    location    "{location}";
    object      {obj};
}}
// * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * * //

"""


@dataclass
class Mesh:
    """The whole case's mesh: points, hexahedra (VTK order), internal faces and the boundary faces by patch."""

    points: np.ndarray  # (P, 3) float64
    cells: np.ndarray  # (C, 8) point ids, VTK hexahedron order
    internal: list[tuple[list[int], int, int]]  # (face points, owner, neighbour), upper-triangular
    patches: dict[str, list[tuple[list[int], int]]]  # patch -> [(face points, owner)], in PATCH_ORDER

    @property
    def centres(self) -> np.ndarray:
        return self.points[self.cells].mean(axis=1)

    def face_centres(self, patch: str) -> np.ndarray:
        return np.array([self.points[f].mean(axis=0) for f, _ in self.patches[patch]]).reshape(-1, 3)

    @property
    def half(self) -> int:
        """Cells of processor0 in the decomposed form: those of the first half in x."""
        return int(np.searchsorted(self.centres[:, 0], SHAPE[0] * H / 2))


def build_mesh() -> Mesh:
    nx, ny, nz = SHAPE
    hole = np.zeros(SHAPE, dtype=bool)
    hole[HOLE[0][0] : HOLE[0][1], HOLE[1][0] : HOLE[1][1], HOLE[2][0] : HOLE[2][1]] = True
    cell_id = -np.ones(SHAPE, dtype=np.int64)
    cell_id[~hole] = np.arange(int((~hole).sum()))  # C order: x slowest
    used = np.zeros((nx + 1, ny + 1, nz + 1), dtype=bool)
    for i, j, k in zip(*np.nonzero(~hole), strict=True):
        used[i : i + 2, j : j + 2, k : k + 2] = True
    point_id = -np.ones(used.shape, dtype=np.int64)
    point_id[used] = np.arange(int(used.sum()))
    points = np.argwhere(used).astype(np.float64) * H

    def pid(i: int, j: int, k: int) -> int:
        return int(point_id[i, j, k])

    def quad(axis: int, i: int, j: int, k: int) -> list[int]:
        """The face of the grid at index (i, j, k) across ``axis``, its normal along +axis."""
        if axis == 0:
            return [pid(i, j, k), pid(i, j + 1, k), pid(i, j + 1, k + 1), pid(i, j, k + 1)]
        if axis == 1:
            return [pid(i, j, k), pid(i, j, k + 1), pid(i + 1, j, k + 1), pid(i + 1, j, k)]
        return [pid(i, j, k), pid(i + 1, j, k), pid(i + 1, j + 1, k), pid(i, j + 1, k)]

    cells, internal = [], []
    patches: dict[str, list[tuple[list[int], int]]] = {name: [] for name in PATCH_ORDER}
    outer = {(0, -1): "inlet", (0, 1): "outlet", (1, -1): "sides", (1, 1): "sides", (2, -1): "ground", (2, 1): "top"}
    for i, j, k in zip(*np.nonzero(~hole), strict=True):
        c = int(cell_id[i, j, k])
        corners = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]
        cells.append([pid(i + a, j + b, k + c) for a, b, c in corners])  # VTK's hexahedron order
        for axis in range(3):
            for side in (-1, 1):
                n = [i, j, k]
                n[axis] += side
                at = [i, j, k]
                at[axis] += side > 0
                face = quad(axis, *at)
                outward = face if side > 0 else [face[0], *face[:0:-1]]
                if not 0 <= n[axis] < SHAPE[axis]:
                    patches[outer[(axis, side)]].append((outward, c))
                elif hole[tuple(n)]:
                    patches["body"].append((outward, c))
                elif side > 0:  # an internal face, once: owned by the lower cell, normal towards the upper
                    internal.append((face, c, int(cell_id[tuple(n)])))
    internal.sort(key=lambda f: (f[1], f[2]))
    return Mesh(points=points, cells=np.array(cells), internal=internal, patches=patches)


# --- fields ----------------------------------------------------------------------------------------------


def field_values(x: np.ndarray, time: str) -> dict[str, np.ndarray]:
    """U (n, 3), p (n,) and wallShearStress (n, 3) at centres ``x`` at ``time``."""
    s = 1.0 + float(time) / 100.0
    u = np.stack([1.0 + 0.3 * x[:, 0] + 0.1 * x[:, 2], 0.2 * np.sin(x[:, 1]), 0.1 * x[:, 0] * x[:, 2]], axis=1)
    p = np.cos(x[:, 0]) + 0.5 * x[:, 1] - 0.25 * x[:, 2] ** 2
    tau = np.stack([0.01 * x[:, 0], -0.02 * x[:, 1], 0.005 * x[:, 2] ** 2], axis=1)
    return {"U": s * u, "p": s * p, "wallShearStress": s * tau}


def _values(values: np.ndarray) -> str:
    if values.ndim == 1:
        return f"List<scalar> {len(values)}\n(\n" + "".join(f"{v:.17g}\n" for v in values) + ")"
    rows = "".join("(" + " ".join(f"{v:.17g}" for v in row) + ")\n" for row in values)
    return f"List<vector> {len(values)}\n(\n{rows})"


def _uniform(name: str) -> str:
    return "0" if name == "p" else "(0 0 0)"


CLASS = {"U": "volVectorField", "p": "volScalarField", "wallShearStress": "volVectorField"}
DIMENSIONS = {"U": "[0 1 -1 0 0 0 0]", "p": "[0 2 -2 0 0 0 0]", "wallShearStress": "[0 2 -2 0 0 0 0]"}


def _field_file(
    name: str, time: str, cells: np.ndarray, faces: dict[str, np.ndarray], processor: dict[str, np.ndarray]
) -> str:
    """A field file: internal values at the cell centres ``cells``, patch values at the face centres
    ``faces`` (per patch), and ``processor`` patches' values (the neighbour cells')."""
    text = HEADER.format(cls=CLASS[name], location=time, obj=name)
    text += f"dimensions      {DIMENSIONS[name]};\n\n"
    if name == "wallShearStress":
        text += f"internalField   uniform {_uniform(name)};\n\nboundaryField\n{{\n"
    else:
        text += f"internalField   nonuniform {_values(field_values(cells, time)[name])};\n\nboundaryField\n{{\n"
    for patch, centres in faces.items():
        if name != "wallShearStress" and patch == "outlet":
            text += f"    {patch}\n    {{\n        type            zeroGradient;\n    }}\n"
            continue
        if (name == "wallShearStress" and patch != "body") or len(centres) == 0:
            value = f"uniform {_uniform(name)}"
        else:
            value = "nonuniform " + _values(field_values(centres, time)[name])
        text += f"    {patch}\n    {{\n        type            calculated;\n        value           {value};\n    }}\n"
    for patch, centres in processor.items():
        value = "nonuniform " + _values(field_values(centres, time)[name]) if name != "wallShearStress" else (
            f"uniform {_uniform(name)}")  # fmt: skip
        text += f"    {patch}\n    {{\n        type            processor;\n        value           {value};\n    }}\n"
    return text + "}\n"


# --- writing a case --------------------------------------------------------------------------------------

CONTROL_DICT = """application     simpleFoam;
startFrom       latestTime;
startTime       0;
stopAt          endTime;
endTime         100;
deltaT          1;
writeControl    timeStep;
writeInterval   100;
purgeWrite      0;
writeFormat     ascii;
writePrecision  9;
writeCompression off;
timeFormat      general;
timePrecision   6;
runTimeModifiable true;
"""


FV_SCHEMES = """ddtSchemes { default steadyState; }
gradSchemes { default Gauss linear; }
divSchemes { default none; }
laplacianSchemes { default Gauss linear corrected; }
interpolationSchemes { default linear; }
snGradSchemes { default corrected; }
"""


def _system(folder: Path) -> None:
    (folder / "system").mkdir(parents=True, exist_ok=True)
    for name, text in (("controlDict", CONTROL_DICT), ("fvSchemes", FV_SCHEMES), ("fvSolution", "solvers {}\n")):
        (folder / "system" / name).write_text(HEADER.format(cls="dictionary", location="system", obj=name) + text)


def _poly_mesh(
    folder: Path,
    points: np.ndarray,
    faces: list[list[int]],
    owner: list[int],
    neighbour: list[int],
    boundary: list[tuple[str, str, int, dict[str, int]]],
) -> None:
    """``folder/constant/polyMesh``: ``boundary`` is (name, type, nFaces, extra entries) in face order."""
    mesh = folder / "constant" / "polyMesh"
    mesh.mkdir(parents=True, exist_ok=True)
    n_cells = max(owner) + 1
    note = f"nPoints:{len(points)}  nCells:{n_cells}  nFaces:{len(faces)}  nInternalFaces:{len(neighbour)}"

    def header(cls: str, obj: str, with_note: bool = False) -> str:
        text = HEADER.format(cls=cls, location="constant/polyMesh", obj=obj)
        return text.replace("    object", f'    note        "{note}";\n    object') if with_note else text

    rows = "".join(f"({x:.9g} {y:.9g} {z:.9g})\n" for x, y, z in points)
    (mesh / "points").write_text(header("vectorField", "points") + f"{len(points)}\n(\n{rows})\n")
    rows = "".join(f"{len(f)}(" + " ".join(map(str, f)) + ")\n" for f in faces)
    (mesh / "faces").write_text(header("faceList", "faces") + f"{len(faces)}\n(\n{rows})\n")
    for name, labels in (("owner", owner), ("neighbour", neighbour)):
        rows = "".join(f"{v}\n" for v in labels)
        (mesh / name).write_text(header("labelList", name, True) + f"{len(labels)}\n(\n{rows})\n")
    text, start = header("polyBoundaryMesh", "boundary") + f"{len(boundary)}\n(\n", len(neighbour)
    for name, kind, n, extra in boundary:
        entries = "".join(f"        {k:<16}{v};\n" for k, v in extra.items())
        group = "        inGroups        List<word> 1(wall);\n" if kind == "wall" else ""
        text += (f"    {name}\n    {{\n        type            {kind};\n{group}        nFaces          {n};\n"
                 f"        startFace       {start};\n{entries}    }}\n")  # fmt: skip
        start += n
    (mesh / "boundary").write_text(text + ")\n")


def write_case(folder: Path, mesh: Mesh | None = None, *, body_type: str = "wall") -> Path:
    """The reconstructed case: ``system/controlDict``, ``constant/polyMesh`` and the ``TIMES`` folders."""
    mesh = mesh or build_mesh()
    _system(folder)
    faces = [f for f, _, _ in mesh.internal] + [f for p in PATCH_ORDER for f, _ in mesh.patches[p]]
    owner = [o for _, o, _ in mesh.internal] + [o for p in PATCH_ORDER for _, o in mesh.patches[p]]
    neighbour = [n for _, _, n in mesh.internal]
    types = {**DOMAIN_PATCHES, "body": body_type}
    boundary = [(p, types[p], len(mesh.patches[p]), {}) for p in PATCH_ORDER]
    _poly_mesh(folder, mesh.points, faces, owner, neighbour, boundary)
    centres = {p: mesh.face_centres(p) for p in PATCH_ORDER}
    for time in TIMES:
        (folder / time).mkdir(parents=True, exist_ok=True)
        for name in CLASS:
            (folder / time / name).write_text(_field_file(name, time, mesh.centres, centres, {}))
    return folder


def write_decomposed(folder: Path, mesh: Mesh | None = None) -> Path:
    """The case decomposed in two along x (``processor0``, ``processor1``), times only in the processors
    (and the initial ``0`` at the top, as ``decomposePar`` leaves it); no reconstructed mesh."""
    mesh = mesh or build_mesh()
    _system(folder)
    (folder / "constant").mkdir(parents=True, exist_ok=True)
    half = mesh.half
    proc_of = (np.arange(len(mesh.cells)) >= half).astype(int)
    cut = [(f, o, n) for f, o, n in mesh.internal if proc_of[o] != proc_of[n]]  # owner in 0, neighbour in 1
    centres = mesh.centres
    for proc in (0, 1):
        mine = np.nonzero(proc_of == proc)[0]
        local = {int(c): i for i, c in enumerate(mine)}
        internal = [(f, local[o], local[n]) for f, o, n in mesh.internal if proc_of[o] == proc_of[n] == proc]
        patches = {p: [(f, local[o]) for f, o in mesh.patches[p] if proc_of[o] == proc] for p in PATCH_ORDER}
        other = 1 - proc
        if proc == 0:
            proc_faces = [(f, local[o]) for f, o, _ in cut]
            neighbour_cells = [n for _, _, n in cut]
        else:
            proc_faces = [([f[0], *f[:0:-1]], local[n]) for f, _, n in cut]  # owned here: the reversed face
            neighbour_cells = [o for _, o, _ in cut]
        proc_patch = f"procBoundary{proc}to{other}"
        all_faces = [f for f, _, _ in internal] + [f for p in PATCH_ORDER for f, _ in patches[p]]
        all_faces += [f for f, _ in proc_faces]
        used = np.unique(np.concatenate([np.asarray(f) for f in all_faces]))
        renumber = {int(g): i for i, g in enumerate(used)}
        faces = [[renumber[v] for v in f] for f in all_faces]
        owner = [o for _, o, _ in internal] + [o for p in PATCH_ORDER for _, o in patches[p]]
        owner += [o for _, o in proc_faces]
        boundary = [(p, {**DOMAIN_PATCHES, "body": "wall"}[p], len(patches[p]), {}) for p in PATCH_ORDER]
        boundary.append((proc_patch, "processor", len(proc_faces), {"matchTolerance": 0.0001, "transform":
                         "unknown", "myProcNo": proc, "neighbProcNo": other}))  # fmt: skip
        proc_dir = folder / f"processor{proc}"
        _poly_mesh(proc_dir, mesh.points[used], faces, owner, [n for _, _, n in internal], boundary)
        face_centres = {p: np.array([mesh.points[f].mean(axis=0) for f, _ in patches[p]]).reshape(-1, 3)
                        for p in PATCH_ORDER}  # fmt: skip
        for time in TIMES:
            (proc_dir / time).mkdir(parents=True, exist_ok=True)
            for name in CLASS:
                text = _field_file(name, time, centres[mine], face_centres, {proc_patch: centres[neighbour_cells]})
                (proc_dir / time / name).write_text(text)
    (folder / "0").mkdir(exist_ok=True)
    for name in CLASS:  # the initial fields at the top, as a decomposed run keeps them
        (folder / "0" / name).write_text((folder / "processor0" / "0" / name).read_text())
    return folder


def write_vtu_case(folder: Path, mesh: Mesh | None = None, *, time: str = TIMES[-1]) -> Path:
    """Our layout of the same arrays: ``surface.vtu`` (the body faces, cell data p and wallShearStress) and
    ``volume.vtu`` (the hexahedra, cell data U and p)."""
    import pyvista as pv

    mesh = mesh or build_mesh()
    folder.mkdir(parents=True, exist_ok=True)
    body = [f for f, _ in mesh.patches["body"]]
    used = np.unique(np.concatenate(body))
    renumber = {int(g): i for i, g in enumerate(used)}
    quads = np.array([[renumber[v] for v in f] for f in body])
    surface = pv.UnstructuredGrid({pv.CellType.QUAD: quads}, mesh.points[used])
    values = field_values(mesh.face_centres("body"), time)
    surface.cell_data["p"] = values["p"]
    surface.cell_data["wallShearStress"] = values["wallShearStress"]
    surface.save(folder / "surface.vtu")
    volume = pv.UnstructuredGrid({pv.CellType.HEXAHEDRON: mesh.cells}, mesh.points)
    values = field_values(mesh.centres, time)
    volume.cell_data["U"] = values["U"]
    volume.cell_data["p"] = values["p"]
    volume.save(folder / "volume.vtu")
    return folder


def write_params(folder: Path, **params: float) -> Path:
    (folder / "params.json").write_text(json.dumps(params))
    return folder / "params.json"
