"""Real-size cases on an ordinary machine: peak memory and time of prepare and predict on DrivAerML-sized files.

    python benchmarks/scale.py                          # 100M-cell volumes (>= 10 GB raw), 9M-point surface
    python benchmarks/scale.py --cells 2000000 --surface-subdivisions 3 --volume-points 200000   # a quick check
    python benchmarks/scale.py --only prepare           # or predict, shards

It makes its own synthetic files under ``--out`` (``out/scale`` by default; reused when present):

- ``volume_raw.vtu`` and ``volume_zlib.vtu``: a block of ``--cells`` hexahedra (a structured grid written
  as an UnstructuredGrid, Int64 ids, Float32 points) around the shipped Ahmed body's box, with cell data
  ``U`` (3 x Float32) and ``p`` (Float32) of a smooth analytic flow; appended raw data and zlib blocks as
  VTK writes them. Written slab by slab: the generator never holds the file.
- ``surface.vtp``: the shipped ``geometry.stl`` subdivided ``--surface-subdivisions`` times (6: 18.8M
  triangles, 9.4M points).

and measures, each in a fresh process under ``/usr/bin/time -v`` (peak resident memory, wall time):

- *prepare*: one case (the shipped ``surface.vtu`` beside each synthetic volume) with ``max_volume_points``
  ``--subset`` (1M), streaming (``data.streaming: always``) and through VTK (``never``, only where the file
  fits in half the machine's memory); the streaming reader alone on the same subset, and ``pyvista.read`` of
  the whole file alone (where its arrays fit), the yardstick of reading;
- *predict*: ``mspt predict RUN surface.vtp --volume-points N`` (a tiny model trained first on two shipped
  cases), ``--uncertainty 0`` and the default 3 draws;
- *shards*: ``--cases`` copies of the raw case prepared by one process, and by two shards at once then
  ``--merge``.

Prints one Markdown table; record it in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "ahmed" / "case_0000"
MSPT = [sys.executable, "-m", "msptcli"]
HEX = 12  # VTK_HEXAHEDRON
SLAB_CELLS = 1 << 21  # cells generated and written at a time
ZLIB_BLOCK = 1 << 15  # VTK's default compressed block size


# --- the synthetic files -------------------------------------------------------------------------------


def grid_shape(cells: int) -> tuple[int, int, int]:
    """(nx, ny, nz) cells of a box 10 x 3.2 x 2 m with about ``cells`` cubic cells."""
    h = (10 * 3.2 * 2 / cells) ** (1 / 3)
    return max(2, round(10 / h)), max(2, round(3.2 / h)), max(2, round(2 / h))


def flow(centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """U (n, 3) and p (n,) float32 of potential flow past a sphere of radius 0.2 m at the body's centre, 40 m/s:
    ``u = U (e_x - r0^3 / (2 r^3) (3 (e_x . n) n - e_x))``, ``p = (U^2 - |u|^2) / 2`` (kinematic)."""
    r0, u0 = 0.2, 40.0
    x = centres - np.array([0.57, 0.0, 0.2])
    r = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), r0)
    n = x / r
    ex = np.array([1.0, 0.0, 0.0])
    u = u0 * (ex - (r0**3 / (2 * r**3)) * (3 * n[:, :1] * n - ex))
    p = 0.5 * (u0**2 - (u**2).sum(axis=1))
    return u.astype(np.float32), p.astype(np.float32)


def write_volume(path: Path, cells: int, *, compress: bool) -> None:
    """A structured block of hexahedra as a .vtu, slab by slab (module docstring)."""
    nx, ny, nz = grid_shape(cells)
    n_cells, n_points = nx * ny * nz, (nx + 1) * (ny + 1) * (nz + 1)
    lo, hi = np.array([-3.0, -1.6, 0.0]), np.array([7.0, 1.6, 2.0])
    step = (hi - lo) / np.array([nx, ny, nz])
    kinds = [("Points", "Float32", 3, n_points), ("U", "Float32", 3, n_cells), ("p", "Float32", 1, n_cells),
             ("connectivity", "Int64", 1, 8 * n_cells), ("offsets", "Int64", 1, n_cells),
             ("types", "UInt8", 1, n_cells)]  # fmt: skip

    def points(start: int, stop: int) -> np.ndarray:
        i = np.arange(start, stop)
        ijk = np.stack([i % (nx + 1), (i // (nx + 1)) % (ny + 1), i // ((nx + 1) * (ny + 1))], axis=1)
        return (lo + ijk * step).astype(np.float32)

    def cell_ijk(start: int, stop: int) -> np.ndarray:
        c = np.arange(start, stop)
        return np.stack([c % nx, (c // nx) % ny, c // (nx * ny)], axis=1)

    def centres(start: int, stop: int) -> np.ndarray:
        return lo + (cell_ijk(start, stop) + 0.5) * step

    def connectivity(start: int, stop: int) -> np.ndarray:  # ``start``, ``stop`` in cells
        i, j, k = cell_ijk(start, stop).T
        base = i + (nx + 1) * (j + (ny + 1) * k)
        dx, dy, dz = 1, nx + 1, (nx + 1) * (ny + 1)
        corners = [0, dx, dx + dy, dy, dz, dz + dx, dz + dx + dy, dz + dy]
        return (base[:, None] + np.array(corners)[None, :]).astype(np.int64).reshape(-1)

    makers = {
        "Points": lambda a, b: points(a, b).reshape(-1),
        "U": lambda a, b: flow(centres(a, b))[0].reshape(-1),
        "p": lambda a, b: flow(centres(a, b))[1],
        "connectivity": connectivity,
        "offsets": lambda a, b: 8 * np.arange(a + 1, b + 1, dtype=np.int64),
        "types": lambda a, b: np.full(b - a, HEX, dtype=np.uint8),
    }
    rows = {"Points": n_points}  # the others run over cells
    compressor = ' compressor="vtkZLibDataCompressor"' if compress else ""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        head = (f'<?xml version="1.0"?>\n<VTKFile type="UnstructuredGrid" version="1.0" byte_order="LittleEndian" '
                f'header_type="UInt64"{compressor}>\n  <UnstructuredGrid>\n'
                f'    <Piece NumberOfPoints="{n_points}" NumberOfCells="{n_cells}">\n')  # fmt: skip
        sections = {"Points": "Points", "U": "CellData", "p": "CellData", "connectivity": "Cells",
                    "offsets": "Cells", "types": "Cells"}  # fmt: skip
        placeholders = {}
        body = head
        for section in ("CellData", "Points", "Cells"):
            body += f"      <{section}>\n"
            for name, vtk_type, comps, _ in kinds:
                if sections[name] != section:
                    continue
                c = f' NumberOfComponents="{comps}"' if comps > 1 else ""
                body += f'        <DataArray type="{vtk_type}" Name="{name}"{c} format="appended" offset="'
                placeholders[name] = len(body.encode())
                body += " " * 21 + "/>\n"
            body += f"      </{section}>\n"
        body += '    </Piece>\n  </UnstructuredGrid>\n  <AppendedData encoding="raw">\n   _'
        out.write(body.encode())
        start, offsets = out.tell(), {}
        for name, _, comps, count in kinds:
            offsets[name] = out.tell() - start
            total = rows.get(name, n_cells)
            itemsize = 1 if name == "types" else (8 if name in ("connectivity", "offsets") else 4)
            nbytes = count * comps * itemsize
            chunks = (makers[name](a, min(a + SLAB_CELLS, total)) for a in range(0, total, SLAB_CELLS))
            _append(out, chunks, nbytes, compress)
        out.write(b"\n  </AppendedData>\n</VTKFile>\n")
        for name, where in placeholders.items():
            out.seek(where)
            out.write(f'{offsets[name]}"'.ljust(21).encode())
    tmp.replace(path)


def _append(out, chunks, nbytes: int, compress: bool) -> None:  # type: ignore[no-untyped-def]
    """One array's appended data from its chunks: a UInt64 byte count and the bytes, or zlib blocks."""
    import zlib

    if not compress:
        out.write(np.uint64(nbytes).tobytes())
        for chunk in chunks:
            out.write(np.ascontiguousarray(chunk).tobytes())
        return
    count = -(-nbytes // ZLIB_BLOCK)
    last = nbytes - (count - 1) * ZLIB_BLOCK
    sizes = np.zeros(3 + count, dtype=np.uint64)
    sizes[:3] = (count, ZLIB_BLOCK, 0 if last == ZLIB_BLOCK else last)
    where = out.tell()
    out.write(sizes.tobytes())
    pending, k = b"", 0
    for chunk in chunks:
        buffer = memoryview(pending + np.ascontiguousarray(chunk).tobytes())
        whole = len(buffer) // ZLIB_BLOCK * ZLIB_BLOCK
        for at in range(0, whole, ZLIB_BLOCK):
            data = zlib.compress(buffer[at : at + ZLIB_BLOCK], 1)
            sizes[3 + k], k = len(data), k + 1
            out.write(data)
        pending = bytes(buffer[whole:])
    if pending:
        data = zlib.compress(pending, 1)
        sizes[3 + k], k = len(data), k + 1
        out.write(data)
    assert k == count, (k, count)
    end = out.tell()
    out.seek(where)
    out.write(sizes.tobytes())
    out.seek(end)


def write_surface(path: Path, subdivisions: int) -> int:
    """The shipped STL subdivided (linear) ``subdivisions`` times, as a .vtp; its number of points."""
    import pyvista as pv

    surface = pv.read(EXAMPLE / "geometry.stl").triangulate().subdivide(subdivisions, "linear").clean()
    surface.save(path)
    return surface.n_points


# --- the measurements ----------------------------------------------------------------------------------


def measured(label: str, command: list[str], **env: str) -> dict[str, object]:
    """Run ``command`` under /usr/bin/time -v; its peak resident memory (GB) and wall time (s)."""
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=ROOT)  # fmt: skip
    seconds = time.perf_counter() - started
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    row = {"run": label, "seconds": seconds, "peak_gb": int(peak.group(1)) / 1e6 if peak else float("nan"),
           "ok": done.returncode == 0}  # fmt: skip
    if done.returncode != 0:
        row["error"] = (done.stderr.strip().splitlines() or ["?"])[-12:]
    print(f"  {label}: {seconds:.1f} s, {row['peak_gb']:.2f} GB" + ("" if row["ok"] else f"  FAILED {row['error']}"),
          file=sys.stderr, flush=True)
    return row


def case_folder(root: Path, name: str, volume: Path) -> Path:
    """A case: the shipped surface.vtu beside a link to ``volume``."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "surface.vtu", folder / "surface.vtu")
    shutil.copy(EXAMPLE / "params.json", folder / "params.json")
    link = folder / "volume.vtu"
    if not link.exists():
        link.symlink_to(volume.resolve())
    return folder


def prepare_rows(out: Path, volumes: dict[str, Path], subset: int) -> list[dict[str, object]]:
    rows = []
    settings = ["--set", f"data.max_volume_points={subset}", "--set", "data.reference_velocity=40"]
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for kind, volume in volumes.items():
        size = volume.stat().st_size
        case = case_folder(out / "cases", f"case_{kind}", volume)
        read = ("from functools import partial; from msptcli.data.read import read_fields_subset; "
                "from msptcli.data.prepare_case import _subsample; "
                f"read_fields_subset({str(volume)!r}, ['U', 'p'], choose=partial(_subsample, limit={subset}, "
                f"name='case_{kind}'))")  # fmt: skip
        label = f"streaming read alone of {subset:,} cells of the {kind} file"
        rows.append(measured(label, [sys.executable, "-c", read]))
        for mode in ("always", "never"):
            if mode == "never" and size * 3 > total / 2:
                rows.append({"run": f"prepare {kind} ({size / 1e9:.1f} GB), through VTK", "seconds": None,
                             "peak_gb": None, "ok": False, "error": ["does not fit: VTK needs ~3x the file"]})
                continue
            data = out / f"data-{kind}-{mode}"
            shutil.rmtree(data, ignore_errors=True)
            rows.append(measured(f"prepare {kind} ({size / 1e9:.1f} GB), {subset:,} cells, streaming={mode}",
                                 [*MSPT, "prepare", str(case), "-o", str(data), *settings,
                                  "--set", f"data.streaming={mode}"]))  # fmt: skip
        if 1.3 * volumes["raw"].stat().st_size < 0.7 * total:  # VTK holds the arrays (the raw file's size)
            rows.append(measured(f"pyvista.read of the whole {kind} file",
                                 [sys.executable, "-c", f"import pyvista as pv; pv.read({str(volume)!r})"]))
    return rows


def predict_rows(out: Path, surface: Path, volume_points: int) -> list[dict[str, object]]:
    run = out / "run"
    if not (run / "checkpoints").is_dir():
        data = out / "train-data"
        cases = [str(ROOT / "examples/ahmed" / name) for name in ("case_0000", "case_0001")]
        subprocess.run([*MSPT, "prepare", *cases,
                        "-o", str(data), "-c", str(ROOT / "examples/ahmed/config.yaml"),
                        "--set", "data.split.val=[]", "--set", "data.split.test=[]"], check=True)  # fmt: skip
        subprocess.run([*MSPT, "train", str(data), "-o", str(run), "-c", str(ROOT / "examples/ahmed/config.yaml"),
                        "--epochs", "1"], check=True)  # fmt: skip
    rows = []
    for draws in (0, 3):
        target = out / f"predictions-{draws}"
        shutil.rmtree(target, ignore_errors=True)
        rows.append(measured(f"predict {surface.name} + {volume_points:,} volume points, --uncertainty {draws}",
                             [*MSPT, "predict", str(run), str(surface), "--volume-points", str(volume_points),
                              "--uncertainty", str(draws), "-o", str(target)]))  # fmt: skip
    return rows


def shard_rows(out: Path, volume: Path, subset: int, cases: int) -> list[dict[str, object]]:
    folders = [case_folder(out / "shard-cases", f"case_{i:03d}", volume) for i in range(cases)]
    settings = ["--set", f"data.max_volume_points={subset}", "--set", "data.reference_velocity=40",
                "--set", "data.streaming=always"]  # fmt: skip
    one, shards = out / "data-one", out / "data-shards"
    for d in (one, shards):
        shutil.rmtree(d, ignore_errors=True)
    rows = [measured(f"prepare {cases} cases, one process", [*MSPT, "prepare", *map(str, folders), "-o", str(one),
                                                              *settings])]  # fmt: skip
    started = time.perf_counter()
    procs = [subprocess.Popen([*MSPT, "prepare", *map(str, folders), "-o", str(shards), "--shard", f"{i}/2",
                               *settings], cwd=ROOT) for i in (1, 2)]  # fmt: skip
    codes = [p.wait() for p in procs]
    merge = measured("  merge", [*MSPT, "prepare", *map(str, folders), "-o", str(shards), "--merge", *settings])
    rows.append({"run": f"prepare {cases} cases, 2 shards at once + merge", "seconds": time.perf_counter() - started,
                 "peak_gb": merge["peak_gb"], "ok": all(c == 0 for c in codes) and merge["ok"]})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "scale")
    parser.add_argument("--cells", type=int, default=100_000_000, help="hexahedra of the synthetic volumes")
    parser.add_argument("--subset", type=int, default=1_000_000, help="data.max_volume_points of prepare")
    parser.add_argument("--surface-subdivisions", type=int, default=6, help="6: 9.4M surface points")
    parser.add_argument("--volume-points", type=int, default=10_000_000, help="predict's --volume-points")
    parser.add_argument("--cases", type=int, default=4, help="cases of the shards comparison")
    parser.add_argument("--only", choices=["prepare", "predict", "shards"], action="append")
    args = parser.parse_args()
    only = set(args.only or ["prepare", "predict", "shards"])
    args.out.mkdir(parents=True, exist_ok=True)
    volumes = {"raw": args.out / f"volume_raw_{args.cells}.vtu", "zlib": args.out / f"volume_zlib_{args.cells}.vtu"}
    if only & {"prepare", "shards"}:
        for kind, path in volumes.items():
            if not path.exists():
                started = time.perf_counter()
                write_volume(path, args.cells, compress=kind == "zlib")
                print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s",
                      file=sys.stderr)  # fmt: skip
    surface = args.out / f"surface_{args.surface_subdivisions}.vtp"
    if "predict" in only and not surface.exists():
        print(f"wrote {surface}: {write_surface(surface, args.surface_subdivisions):,} points", file=sys.stderr)
    rows = []
    if "prepare" in only:
        rows += prepare_rows(args.out, volumes, args.subset)
    if "predict" in only:
        rows += predict_rows(args.out, surface, args.volume_points)
    if "shards" in only:
        rows += shard_rows(args.out, volumes["raw"], args.subset, args.cases)
    print("| run | time | peak memory |\n|---|---:|---:|")
    for row in rows:
        seconds = "-" if row["seconds"] is None else f"{row['seconds']:.0f} s"
        peak = "-" if row["peak_gb"] is None else f"{row['peak_gb']:.2f} GB"
        note = "" if row["ok"] else f" (failed: {' '.join(row.get('error', ['?']))[-200:]})"
        print(f"| {row['run']}{note} | {seconds} | {peak} |")


if __name__ == "__main__":
    main()
