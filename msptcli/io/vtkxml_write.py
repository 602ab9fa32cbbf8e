"""A VTK XML writer that streams: the arrays go to the file one block at a time, never the whole file in memory.

``write_mesh`` (``io/meshes.py``) has VTK make the whole file in memory and then writes it: for a prediction
of millions of points that is the file's size again on top of the mesh. :func:`write_streamed` writes a
``.vtp`` (PolyData) or ``.vtu`` (UnstructuredGrid) in VTK's XML format with its data appended after the
XML header, array by array and block by block, straight from the mesh's own arrays (no copies but one
block's), through :func:`~msptcli.io.atomic.atomic_output`: a failed or interrupted write leaves no file.

The appended section is raw (``encoding="raw"``, ``header_type="UInt64"``) or, with ``compress``, zlib blocks
as VTK's own writer makes them. Each array's offset in that section is known only once the arrays before it
are written (compressed sizes), so the header is first written with blanks of fixed width where the offsets go,
filled in at the end (``offset="123"`` and spaces before the tag's end); a block's compressed sizes likewise.
VTK, pyvista, meshio and ParaView read the files.

Polyhedral cells (their face streams) are not written here: :func:`streamable` says whether a mesh can be.
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.io.atomic import atomic_output
from msptcli.io.guard import check_outputs

#: Bytes per block written (and per zlib block, as VTK's writer makes them by default: 32 KiB there).
BLOCK_BYTES = 1 << 22
#: Width of an offset written before it is known (filled in at the end).
_OFFSET_WIDTH = 20
#: The VTK type of each NumPy dtype written as it is (bool is written as UInt8).
_TYPES = {
    np.dtype(np.float32): "Float32", np.dtype(np.float64): "Float64",
    np.dtype(np.int8): "Int8", np.dtype(np.uint8): "UInt8", np.dtype(np.int16): "Int16",
    np.dtype(np.uint16): "UInt16", np.dtype(np.int32): "Int32", np.dtype(np.uint32): "UInt32",
    np.dtype(np.int64): "Int64", np.dtype(np.uint64): "UInt64",
}  # fmt: skip
_POLYHEDRON = 42  # VTK_POLYHEDRON
_POLY_SECTIONS = ("Verts", "Lines", "Strips", "Polys")
#: Called with (bytes written, bytes in all) after every block.
Progress = Callable[[int, int], None]


def streamable(mesh: Any) -> bool:
    """Whether :func:`write_streamed` can write ``mesh``: PolyData, or an UnstructuredGrid without polyhedra."""
    import pyvista as pv

    if isinstance(mesh, pv.PolyData):
        return True
    if not isinstance(mesh, pv.UnstructuredGrid):
        return False
    return not bool(np.any(np.asarray(mesh.celltypes) == _POLYHEDRON))


def write_streamed(
    mesh: Any,
    path: str | os.PathLike[str],
    *,
    inputs: tuple[Path, ...] = (),
    compress: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write ``mesh`` (pyvista PolyData as ``.vtp``, or an UnstructuredGrid as ``.vtu``) to ``path`` atomically,
    its arrays streamed block by block; refuse to overwrite any of ``inputs``. ``compress``: zlib blocks, as
    ``mesh.save`` writes (smaller, slower); else raw. ``progress(done, total)``: bytes of array data written."""
    import pyvista as pv

    p = Path(path)
    check_outputs(None, [p], inputs=inputs, option="output path")
    kind = "PolyData" if isinstance(mesh, pv.PolyData) else "UnstructuredGrid"
    if p.suffix.lower() != (".vtp" if kind == "PolyData" else ".vtu") or not streamable(mesh):
        raise InvalidInputError(f"{p}: write_streamed writes PolyData as .vtp and UnstructuredGrid (no polyhedra) "
                                "as .vtu; use write_mesh")  # fmt: skip
    pieces = _pieces(mesh, kind)
    total = sum(a.nbytes for _, arrays in pieces for _, a in arrays)
    with atomic_output(p) as tmp, open(tmp, "wb") as out:
        _write(out, kind, mesh, pieces, compress, total, progress)
    return p


def _pieces(mesh: Any, kind: str) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """The sections of the file and their arrays, as 2-D views of the mesh's own data (no copies)."""
    from vtk.util.numpy_support import vtk_to_numpy

    def data(fields: Any) -> list[tuple[str, np.ndarray]]:
        out = []
        for name in fields.keys():  # noqa: SIM118 (pyvista's data arrays)
            values = np.asarray(fields[name])
            if values.dtype == bool:
                values = values.view(np.uint8)
            if values.dtype not in _TYPES or values.ndim == 0:  # strings and objects: not written
                continue
            out.append((str(name), values.reshape(len(values), -1)))
        return out

    sections = [("PointData", data(mesh.point_data)), ("CellData", data(mesh.cell_data)),
                ("FieldData", data(mesh.field_data)), ("Points", [("Points", _points(mesh))])]  # fmt: skip
    if kind == "PolyData":
        for section in _POLY_SECTIONS:
            cells = getattr(mesh, f"Get{section}")()
            connectivity = vtk_to_numpy(cells.GetConnectivityArray())
            offsets = vtk_to_numpy(cells.GetOffsetsArray())[1:]  # VTK's leading 0 is not in the file
            sections.append((section, [("connectivity", connectivity[:, None]), ("offsets", offsets[:, None])]))
    else:
        grid = mesh.GetCells()
        connectivity = vtk_to_numpy(grid.GetConnectivityArray())
        offsets = vtk_to_numpy(grid.GetOffsetsArray())[1:]
        types = np.asarray(mesh.celltypes, dtype=np.uint8)
        sections.append(("Cells", [("connectivity", connectivity[:, None]), ("offsets", offsets[:, None]),
                                   ("types", types[:, None])]))  # fmt: skip
    return sections


def _points(mesh: Any) -> np.ndarray:
    points = np.asarray(mesh.points)
    return points if points.dtype in (np.float32, np.float64) else points.astype(np.float64)


def _write(
    out: IO[bytes],
    kind: str,
    mesh: Any,
    pieces: list[tuple[str, list[tuple[str, np.ndarray]]]],
    compress: bool,
    total: int,
    progress: Progress | None,
) -> None:
    """The header with blank offsets, the appended arrays, then the offsets filled in."""
    order = "LittleEndian" if sys.byteorder == "little" else "BigEndian"
    compressor = ' compressor="vtkZLibDataCompressor"' if compress else ""
    head = [f'<?xml version="1.0"?>\n<VTKFile type="{kind}" version="1.0" byte_order="{order}" '
            f'header_type="UInt64"{compressor}>\n  <{kind}>\n']  # fmt: skip
    slots: list[tuple[int, np.ndarray]] = []  # (byte position of the offset's blank in the header, the array)

    def array(name: str, values: np.ndarray, indent: str, tuples: bool = False) -> None:
        comps = f' NumberOfComponents="{values.shape[1]}"' if values.shape[1] > 1 else ""
        comps += f' NumberOfTuples="{len(values)}"' if tuples else ""  # field data says it
        text = (f'{indent}<DataArray type="{_TYPES[values.dtype]}" Name="{_escape(name)}"{comps} format="appended" '
                'offset="')  # fmt: skip
        head.append(text)
        slots.append((sum(len(h.encode()) for h in head), values))
        head.append(" " * (_OFFSET_WIDTH + 1) + "/>\n")

    fields = dict(pieces[:3])
    if fields["FieldData"]:
        head.append("    <FieldData>\n")
        for name, values in fields["FieldData"]:
            array(name, values, "      ", tuples=True)
        head.append("    </FieldData>\n")
    counts = {section: len(arrays[1][1]) for section, arrays in pieces[4:]}  # offsets: one row per cell
    if kind == "PolyData":
        cells = " ".join(f'NumberOf{s}="{counts[s]}"' for s in _POLY_SECTIONS)
    else:
        cells = f'NumberOfCells="{counts["Cells"]}"'
    head.append(f'    <Piece NumberOfPoints="{mesh.n_points}" {cells}>\n')
    for section, arrays in pieces[:2]:
        head.append(f"      <{section}>\n")
        for name, values in arrays:
            array(name, values, "        ")
        head.append(f"      </{section}>\n")
    for section, arrays in [pieces[3], *pieces[4:]]:
        head.append(f"      <{section}>\n")
        for name, values in arrays:
            array(name, values, "        ")
        head.append(f"      </{section}>\n")
    head.append(f'    </Piece>\n  </{kind}>\n  <AppendedData encoding="raw">\n   _')
    header = "".join(head).encode()
    out.write(header)
    start, done, offsets = out.tell(), 0, []
    for _, values in slots:
        offsets.append(out.tell() - start)
        for written in _appended(out, values, compress):
            done += written
            if progress is not None:
                progress(done, total)
    out.write(b"\n  </AppendedData>\n</VTKFile>\n")
    end = out.tell()
    for (where, _), offset in zip(slots, offsets, strict=True):
        out.seek(where)
        out.write(f'{offset}"'.ljust(_OFFSET_WIDTH + 1).encode())  # the blanks after it: spaces in the tag
    out.seek(end)


def _appended(out: IO[bytes], values: np.ndarray, compress: bool) -> Iterator[int]:
    """Write one array's appended data: its UInt64 byte count then the bytes (raw), or the zlib header
    (blocks, block size, last block's size, each block's compressed size) then the blocks; yields the raw
    bytes written after each block."""
    flat = np.ascontiguousarray(values).reshape(-1)  # a view for the mesh's own (contiguous) arrays
    raw = flat.view(np.uint8) if flat.size else np.zeros(0, dtype=np.uint8)
    if not compress:
        out.write(np.uint64(raw.nbytes).tobytes())
        for start in range(0, raw.nbytes, BLOCK_BYTES):
            out.write(memoryview(raw[start : start + BLOCK_BYTES]))
            yield min(BLOCK_BYTES, raw.nbytes - start)
        return
    block = 1 << 15  # VTK's default: files as VTK writes them
    count = -(-raw.nbytes // block)
    last = raw.nbytes - (count - 1) * block if count else 0
    where = out.tell()
    sizes = np.zeros(3 + count, dtype=np.uint64)
    sizes[:3] = (count, block, last if last != block else 0)  # 0: the last block is whole
    out.write(sizes.tobytes())
    pending = 0
    for k in range(count):
        piece = raw[k * block : (k + 1) * block]
        data = zlib.compress(memoryview(piece))
        sizes[3 + k] = len(data)
        out.write(data)
        pending += len(piece)
        if pending >= BLOCK_BYTES or k == count - 1:
            yield pending
            pending = 0
    end = out.tell()
    out.seek(where)
    out.write(sizes.tobytes())
    out.seek(end)


def _escape(name: str) -> str:
    return name.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
