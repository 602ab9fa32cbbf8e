"""A subset of a VTK XML ``.vtu``/``.vtp`` file, read in bounded memory.

VTK's readers (and pyvista's on top of them) read a whole file into memory: a
DrivAerML-class volume of 150M cells takes 40-55 GB. This module reads only what
a seeded subset needs. The XML header is parsed with expat, without keeping the
text of the data arrays; the data are then read by seeking: raw or base64
encoded, uncompressed or compressed block by block (zlib, lzma; lz4 when the
``lz4`` package is installed), decompressing only the blocks that hold asked rows.

For cell data, the points are the cell centres as VTK's ``vtkCellCenters``
computes them (each point weighted by the cell's interpolation functions at its
parametric centre; the mean of the points for most linear cells, not for
pyramids). The offsets and connectivity of the asked cells are read first, then
only the points they use. Memory is about the subset times the points per cell.

Arrays stored as ascii text cannot be read by seeking: such an array is parsed
whole (one array at a time).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import lzma
import os
import re
import xml.parsers.expat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from msptcli.errors import MeshReadError

#: VTK XML type names -> numpy kinds.
_TYPES = {
    "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
    "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8",
}  # fmt: skip
_COMPRESSORS = ("vtkZLibDataCompressor", "vtkLZMADataCompressor", "vtkLZ4DataCompressor")
#: Cell types whose centre is a fixed weighting of a fixed number of points: type -> number of points.
#: Polygons, polyhedra, poly-lines and strips are not: VTK computes their centres differently.
LINEAR_CELLS = {1: 1, 3: 2, 5: 3, 8: 4, 9: 4, 10: 4, 11: 8, 12: 8, 13: 6, 14: 5}
_CELL_NAMES = {2: "poly-vertex", 4: "poly-line", 6: "triangle strip", 7: "polygon", 42: "polyhedron"}
#: Bytes read from an uncompressed array at once.
_WINDOW = 1 << 22
#: The header is searched for its end in pieces of this size.
_CHUNK = 1 << 20


class _Bad(Exception):
    """A problem with the file; :class:`VtkXmlFile` turns it into a MeshReadError naming the file."""


@dataclass
class DataArray:
    """One ``<DataArray>`` of the header: its type, and where its data lie."""

    name: str
    dtype: np.dtype
    components: int
    format: str  # "appended", "binary" (inline base64) or "ascii"
    offset: int = 0  # appended: from the start of the appended data
    text: tuple[int, int] = (0, 0)  # inline: byte range of its text in the file


@dataclass
class Piece:
    """One ``<Piece>``: its counts and its arrays by section ("PointData", "CellData", "Points", "Cells", ...)."""

    counts: dict[str, int]
    sections: dict[str, dict[str, DataArray]] = field(default_factory=dict)


@dataclass
class Header:
    kind: str  # UnstructuredGrid or PolyData
    byte_order: str  # "<" or ">"
    header_type: str  # "u4" or "u8"
    compressor: str | None
    pieces: list[Piece]
    appended: tuple[str, int] | None = None  # encoding, byte offset of the data after "_"


def read_header(f: BinaryIO, size: int) -> Header:
    """Parse the XML part of a VTK XML file (up to ``<AppendedData``), keeping only the arrays' places."""
    parser = xml.parsers.expat.ParserCreate()
    parser.buffer_text = False  # each piece of text comes with its own byte index
    state: dict[str, Any] = {"pieces": [], "stack": [], "root": None, "array": None, "kind": None}

    def start(name: str, attrs: dict[str, str]) -> None:
        stack = state["stack"]
        if state["array"] is not None and state["array"][1] is None:  # a child (InformationKey) ends the text
            state["array"][1] = parser.CurrentByteIndex
        if name == "VTKFile":
            state["root"] = attrs
        elif len(stack) == 1 and name in ("UnstructuredGrid", "PolyData"):
            state["kind"] = name
        elif name == "Piece":
            counts = {k: _int(v, f"Piece {k}") for k, v in attrs.items() if k.startswith("NumberOf")}
            state["pieces"].append(Piece(counts=counts))
        elif name == "DataArray" and state["pieces"] and len(stack) >= 2 and stack[-2] == "Piece":
            state["array"] = [None, None, _data_array(attrs, stack[-1])]
        stack.append(name)

    def text(data: str) -> None:
        if state["array"] is not None and state["array"][0] is None and data.strip():
            state["array"][0] = parser.CurrentByteIndex + len(data) - len(data.lstrip())  # whitespace is ASCII

    def end(name: str) -> None:
        state["stack"].pop()
        current = state["array"]
        if name == "DataArray" and current is not None:
            if current[1] is None:
                current[1] = parser.CurrentByteIndex
            array = current[2]
            if current[0] is not None:
                array.text = (current[0], current[1])
            section = state["stack"][-1]
            state["pieces"][-1].sections.setdefault(section, {})[array.name] = array
            state["array"] = None

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, text
    appended = None
    f.seek(0)
    tail = b""
    done = 0
    try:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                parser.Parse(b"", True)
                break
            where = (tail + chunk).find(b"<AppendedData")
            if where >= 0:
                cut = where - len(tail)
                if cut > 0:
                    parser.Parse(chunk[:cut], False)
                appended = _appended_start(f, done + cut, size)
                break
            parser.Parse(chunk, False)
            done += len(chunk)
            tail = chunk[-16:]
    except xml.parsers.expat.ExpatError as exc:
        reason = "the file ends inside its XML header" if "no element found" in str(exc) or "unclosed" in str(exc) \
            else f"its XML header is not valid ({exc})"  # fmt: skip
        raise _Bad(reason) from None
    root = state["root"]
    if root is None or root.get("type") not in ("UnstructuredGrid", "PolyData") or state["kind"] is None:
        raise _Bad("not a VTK XML UnstructuredGrid or PolyData file")
    order = root.get("byte_order", "LittleEndian")
    if order not in ("LittleEndian", "BigEndian"):
        raise _Bad(f"unknown byte_order {order!r}")
    header_type = root.get("header_type", "UInt32")
    if header_type not in ("UInt32", "UInt64"):
        raise _Bad(f"unknown header_type {header_type!r}")
    compressor = root.get("compressor") or None
    if compressor is not None and compressor not in _COMPRESSORS:
        raise _Bad(f"unknown compressor {compressor!r} (known: {', '.join(_COMPRESSORS)})")
    if not state["pieces"]:
        raise _Bad("the file has no <Piece>")
    return Header(
        kind=state["kind"],
        byte_order="<" if order == "LittleEndian" else ">",
        header_type="u4" if header_type == "UInt32" else "u8",
        compressor=compressor,
        pieces=state["pieces"],
        appended=appended,
    )


def _appended_start(f: BinaryIO, at: int, size: int) -> tuple[str, int]:
    """The encoding of ``<AppendedData ...>`` at byte ``at`` and where its data begin (after the ``_``)."""
    f.seek(at)
    head = f.read(4096)
    match = re.match(rb"<AppendedData\b([^>]*)>\s*_", head)
    if match is None:
        raise _Bad("the <AppendedData> element is malformed or the file ends there")
    enc = re.search(rb'encoding\s*=\s*"([^"]*)"', match.group(1))
    encoding = enc.group(1).decode() if enc else "raw"
    if encoding not in ("raw", "base64"):
        raise _Bad(f"unknown AppendedData encoding {encoding!r}")
    return encoding, at + match.end()


def _data_array(attrs: dict[str, str], section: str) -> DataArray:
    kind = attrs.get("type", "")
    if kind not in _TYPES:
        raise _Bad(f"DataArray {attrs.get('Name', '?')!r} has unknown type {kind!r}")
    fmt = attrs.get("format", "ascii")
    if fmt not in ("appended", "binary", "ascii"):
        raise _Bad(f"DataArray {attrs.get('Name', '?')!r} has unknown format {fmt!r}")
    name = attrs.get("Name", section)  # the points array may be unnamed
    return DataArray(
        name=name,
        dtype=np.dtype(_TYPES[kind]),
        components=_int(attrs.get("NumberOfComponents", "1"), f"{name} NumberOfComponents"),
        format=fmt,
        offset=_int(attrs.get("offset", "0"), f"{name} offset"),
    )


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _Bad(f"{what} is not an integer ({text!r})") from None
    if value < 0:
        raise _Bad(f"{what} is negative ({value})")
    return value


class _Stream:
    """The decoded bytes of one data array, read by range."""

    def __init__(self, f: BinaryIO, array: DataArray, header: Header, size: int):
        self.f, self.array, self.size, self.name = f, array, size, array.name
        self.dtype = array.dtype.newbyteorder(header.byte_order)
        self.hdt = np.dtype(header.header_type).newbyteorder(header.byte_order)
        self.compressor = header.compressor
        self.window = _WINDOW
        self._cache: dict[int, bytes] = {}
        self._values: np.ndarray | None = None
        if array.format == "ascii":
            self._ascii()
            return
        if array.format == "appended":
            if header.appended is None:
                raise _Bad(f"array {self.name!r} is appended but the file has no <AppendedData>")
            encoding, start = header.appended
            self.base64, self.start = encoding == "base64", start + array.offset
        else:
            if array.text == (0, 0):
                raise _Bad(f"array {self.name!r} has no data")
            self.base64, self.start = True, array.text[0]
        if self.compressor is None:
            self.nbytes = int(self._unit(self.start, 0, self.hdt.itemsize).view(self.hdt)[0])
            self._data = self.hdt.itemsize  # decoded position of the data in the unit
        else:
            self._compressed_header()

    def _ascii(self) -> None:
        a, b = self.array.text
        self.f.seek(a)
        raw = self.f.read(max(0, b - a))
        try:
            values = np.array(raw.split(), dtype=self.array.dtype.newbyteorder("="))
        except (ValueError, OverflowError):
            raise _Bad(f"array {self.name!r} holds text that is not numbers of its type") from None
        self._values = values
        self.nbytes = values.nbytes

    def _read_file(self, at: int, n: int) -> bytes:
        if at + n > self.size:
            raise _Bad(f"the file is truncated: array {self.name!r} needs {at + n} bytes, the file has {self.size}")
        self.f.seek(at)
        data = self.f.read(n)
        if len(data) != n:
            raise _Bad(f"the file is truncated inside array {self.name!r}")
        return data

    def _unit(self, start: int, a: int, b: int) -> np.ndarray:
        """Decoded bytes [a, b) of the encoding unit (raw or one base64 run) that begins at file byte ``start``."""
        if b <= a:
            return np.zeros(0, np.uint8)
        if not self.base64:
            return np.frombuffer(self._read_file(start + a, b - a), np.uint8)
        q0, q1 = a // 3, -(-b // 3)
        text = self._read_file(start + 4 * q0, 4 * (q1 - q0))
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _Bad(f"array {self.name!r} holds invalid base64 data") from None
        if len(data) < b - 3 * q0:
            raise _Bad(f"array {self.name!r} holds less base64 data than its header says")
        return np.frombuffer(data, np.uint8)[a - 3 * q0 : b - 3 * q0]

    def _compressed_header(self) -> None:
        h = self.hdt.itemsize
        first = self._unit(self.start, 0, 3 * h).view(self.hdt)
        nblocks, block, last = (int(v) for v in first)
        if nblocks and (block == 0 or nblocks > self.size):
            raise _Bad(f"array {self.name!r} has an invalid compression header")
        sizes = self._unit(self.start, 0, (3 + nblocks) * h).view(self.hdt)[3:].astype(np.int64)
        self.block = block
        self.last = last if last or not nblocks else block
        self.nblocks = nblocks
        self.nbytes = (nblocks - 1) * block + self.last if nblocks else 0
        self.ends = np.concatenate([[0], np.cumsum(sizes)])
        header_bytes = (3 + nblocks) * h
        self._data_start = self.start + (4 * -(-header_bytes // 3) if self.base64 else header_bytes)
        self.window = max(block, 1)

    def _block(self, j: int) -> bytes:
        if j in self._cache:
            return self._cache[j]
        raw = self._unit(self._data_start, int(self.ends[j]), int(self.ends[j + 1])).tobytes()
        expect = self.last if j == self.nblocks - 1 else self.block
        try:
            data = _decompress(self.compressor, raw, expect)
        except _Bad:
            raise
        except Exception:  # zlib.error, lzma.LZMAError, lz4's errors
            raise _Bad(f"block {j} of array {self.name!r} does not decompress ({self.compressor})") from None
        if len(data) != expect:
            raise _Bad(f"block {j} of array {self.name!r} decompresses to {len(data)} bytes, its header says {expect}")
        if len(self._cache) >= 2:
            self._cache.pop(next(iter(self._cache)))
        self._cache[j] = data
        return data

    def read(self, a: int, b: int) -> np.ndarray:
        """Decoded data bytes [a, b)."""
        if b > self.nbytes:
            raise _Bad(f"array {self.name!r} holds {self.nbytes} bytes, fewer than the header's counts need")
        if self._values is not None:
            return self._values.view(np.uint8)[a:b]
        if self.compressor is None:
            return self._unit(self.start, self._data + a, self._data + b)
        j0, j1 = a // self.block, (b - 1) // self.block
        parts = [np.frombuffer(self._block(j), np.uint8) for j in range(j0, j1 + 1)]
        joined = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return joined[a - j0 * self.block : b - j0 * self.block]

    def values(self, count: int) -> int:
        """Check that the array holds ``count`` values (rows times components); return its row width."""
        width = self.array.components
        if self.nbytes != count * width * self.dtype.itemsize:
            held = self.nbytes // (width * self.dtype.itemsize)
            raise _Bad(f"array {self.name!r} holds {held} tuples, the header says {count}")
        return width

    def take(self, rows: np.ndarray, width: int) -> np.ndarray:
        """Rows ``rows`` (sorted, int64) of the array as (len(rows), width) of its own dtype."""
        out = np.empty((len(rows), width), self.dtype.newbyteorder("="))
        if not len(rows):
            return out
        if self._values is not None:
            return self._values.reshape(-1, width)[rows]
        row = width * self.dtype.itemsize
        group = (rows * row) // self.window
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(group)) + 1, [len(rows)]])
        for s, e in itertools.pairwise(cuts):
            r0, r1 = int(rows[s]), int(rows[e - 1])
            chunk = self.read(r0 * row, (r1 + 1) * row).view(self.dtype).reshape(-1, width)
            out[s:e] = chunk[rows[s:e] - r0]
        return out


def _decompress(compressor: str | None, raw: bytes, size: int) -> bytes:
    if compressor == "vtkZLibDataCompressor":
        return zlib.decompress(raw)
    if compressor == "vtkLZMADataCompressor":
        return lzma.decompress(raw)
    try:
        import lz4.block  # type: ignore[import-not-found]
    except ImportError:
        raise _Bad("its compressor vtkLZ4DataCompressor needs the lz4 package: pip install lz4") from None
    return lz4.block.decompress(raw, uncompressed_size=size)


@cache
def centre_weights(cell_type: int) -> np.ndarray:
    """The weights of a cell's points in its centre, as VTK's ``vtkCellCenters`` computes it."""
    import vtk

    cell = vtk.vtkGenericCell()
    cell.SetCellType(cell_type)
    pcoords = [0.0, 0.0, 0.0]
    cell.GetParametricCenter(pcoords)
    weights = [0.0] * LINEAR_CELLS[cell_type]
    cell.InterpolateFunctions(pcoords, weights)
    return np.asarray(weights, dtype=np.float64)


class VtkXmlFile:
    """An open ``.vtu``/``.vtp`` file: its counts and arrays, read by subset.

    Every problem with the file raises :class:`MeshReadError` with one line naming the file.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        try:
            self.f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close/__exit__)
        except OSError as exc:
            raise MeshReadError(f"{self.path}: cannot be opened ({exc.strerror or exc})") from None
        self.size = os.fstat(self.f.fileno()).st_size
        self.header = self._guard(read_header, self.f, self.size)
        self._point_starts = np.cumsum([0] + [p.counts.get("NumberOfPoints", 0) for p in self.header.pieces])
        self._cell_starts = np.cumsum([0] + [self._piece_cells(p) for p in self.header.pieces])

    def __enter__(self) -> VtkXmlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except _Bad as exc:
            raise MeshReadError(f"{self.path}: {exc}") from None
        except MemoryError:
            raise MeshReadError(f"{self.path}: its header asks for more memory than there is (corrupt sizes)") from None

    def _piece_cells(self, piece: Piece) -> int:
        if self.header.kind == "UnstructuredGrid":
            return piece.counts.get("NumberOfCells", 0)
        return sum(piece.counts.get(f"NumberOf{k}", 0) for k in ("Verts", "Lines", "Strips", "Polys"))

    @property
    def n_points(self) -> int:
        return int(self._point_starts[-1])

    @property
    def n_cells(self) -> int:
        return int(self._cell_starts[-1])

    def names(self, location: str) -> set[str]:
        """Names of the arrays at ``location`` ("points" or "cells") present in every piece."""
        section = "PointData" if location == "points" else "CellData"
        sets = [set(p.sections.get(section, {})) for p in self.header.pieces]
        return set.intersection(*sets) if sets else set()

    def _stream(self, array: DataArray) -> _Stream:
        return _Stream(self.f, array, self.header, self.size)

    def _each_piece(self, rows: np.ndarray, starts: np.ndarray) -> list[tuple[int, Piece, np.ndarray, slice]]:
        """(piece index, piece, local rows, slice of ``rows``) for the pieces that hold some of ``rows``."""
        bounds = np.searchsorted(rows, starts)
        out = []
        for k, piece in enumerate(self.header.pieces):
            sl = slice(int(bounds[k]), int(bounds[k + 1]))
            if sl.stop > sl.start:
                out.append((k, piece, rows[sl] - starts[k], sl))
        return out

    def array(self, location: str, name: str, rows: np.ndarray) -> np.ndarray:
        """Array ``name`` at ``rows`` (sorted) of ``location`` ("points"/"cells"), as (len(rows), k) float32."""
        return self._guard(self._array, location, name, np.asarray(rows, dtype=np.int64))

    def _array(self, location: str, name: str, rows: np.ndarray) -> np.ndarray:
        section, key, starts = (
            ("PointData", "NumberOfPoints", self._point_starts)
            if location == "points"
            else ("CellData", None, self._cell_starts)
        )
        parts = []
        for k, piece, local, _ in self._each_piece(rows, starts):
            stream = self._stream(piece.sections[section][name])
            count = piece.counts[key] if key else int(starts[k + 1] - starts[k])
            parts.append(stream.take(local, stream.values(count)).astype(np.float32))
        width = self._width(section, name)
        return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)

    def _width(self, section: str, name: str) -> int:
        return self.header.pieces[0].sections[section][name].components

    def points(self, rows: np.ndarray) -> np.ndarray:
        """The points ``rows`` (sorted), (len(rows), 3) float64."""
        return self._guard(self._points, np.asarray(rows, dtype=np.int64))

    def _points(self, rows: np.ndarray) -> np.ndarray:
        parts = []
        for _, piece, local, _ in self._each_piece(rows, self._point_starts):
            parts.append(self._piece_points(piece, local))
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def _piece_points(self, piece: Piece, local: np.ndarray) -> np.ndarray:
        arrays = piece.sections.get("Points", {})
        if len(arrays) != 1:
            raise _Bad("a <Piece> has no <Points> array")
        stream = self._stream(next(iter(arrays.values())))
        if stream.values(piece.counts.get("NumberOfPoints", 0)) != 3:
            raise _Bad("the points do not have 3 components")
        return stream.take(local, 3).astype(np.float64)

    def cell_centres(self, rows: np.ndarray) -> np.ndarray:
        """Centres of the cells ``rows`` (sorted), (len(rows), 3) float64, as VTK's ``cell_centers()``."""
        return self._guard(self._centres, np.asarray(rows, dtype=np.int64))

    def _centres(self, rows: np.ndarray) -> np.ndarray:
        parts = []
        for _, piece, local, _ in self._each_piece(rows, self._cell_starts):
            if self.header.kind == "UnstructuredGrid":
                groups = [self._topology(piece, "Cells", local, piece.counts.get("NumberOfCells", 0), types=True)]
            else:
                groups = self._poly_topology(piece, local)
            needed, inverse = _unique(np.concatenate([g[1] for g in groups]))
            groups = [(kinds, len(conn), sizes) for kinds, conn, sizes in groups]  # the ids are in ``inverse`` now
            if len(needed) and (needed[0] < 0 or needed[-1] >= piece.counts.get("NumberOfPoints", 0)):
                raise _Bad("the connectivity names points that do not exist")
            points = self._piece_points(piece, needed)
            out = np.empty((sum(len(g[0]) for g in groups), 3))
            at, used = 0, 0
            for types, count, sizes in groups:
                n = len(types)
                _centres_into(out[at : at + n], types, sizes, points, inverse[used : used + count])
                at, used = at + n, used + count
            parts.append(out)
        return np.concatenate(parts) if parts else np.zeros((0, 3))

    def _topology(
        self, piece: Piece, section: str, local: np.ndarray, count: int, *, types: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(types, connectivity, sizes) of the cells ``local`` of one section of a piece."""
        arrays = piece.sections.get(section, {})
        for need in ("connectivity", "offsets", *(("types",) if types else ())):
            if need not in arrays:
                raise _Bad(f"the <{section}> of a piece has no {need!r} array")
        offsets = self._stream(arrays["offsets"])
        held = offsets.nbytes // max(offsets.dtype.itemsize, 1)
        lead = 1 if held == count + 1 and count else 0  # a leading 0 (newer files) or only the ends
        offsets.values(count + lead)
        ask, _ = _unique(np.concatenate([local + lead, local[local + lead >= 1] + lead - 1]))  # ends and starts
        got = offsets.take(ask, 1)[:, 0].astype(np.int64)
        ends = got[np.searchsorted(ask, local + lead)]
        starts = np.zeros(len(local), np.int64)
        has = (local + lead - 1) >= 0
        starts[has] = got[np.searchsorted(ask, local[has] + lead - 1)]
        sizes = ends - starts
        if (sizes < 0).any():
            raise _Bad(f"the offsets of <{section}> decrease")
        conn = self._stream(arrays["connectivity"])
        total = conn.nbytes // max(conn.dtype.itemsize, 1)
        if len(ends) and ends.max() > total:
            raise _Bad(f"the offsets of <{section}> point past its connectivity ({total} ids)")
        index = np.repeat(starts - np.cumsum(np.concatenate([[0], sizes[:-1]])), sizes) + np.arange(int(sizes.sum()))
        ids = conn.take(index, 1)[:, 0].astype(np.int64)
        if types:
            kinds = self._stream(arrays["types"])
            kinds.values(count)
            cell_types = kinds.take(local, 1)[:, 0].astype(np.int64)
        else:
            cell_types = np.zeros(len(local), np.int64)
        return cell_types, ids, sizes

    def _poly_topology(self, piece: Piece, local: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """PolyData cells are its verts, lines, polys and strips, in this order."""
        groups, start = [], 0
        by_size = {"Verts": {1: 1}, "Lines": {2: 3}, "Polys": {3: 5, 4: 9}, "Strips": {}}
        for section in ("Verts", "Lines", "Polys", "Strips"):
            count = piece.counts.get(f"NumberOf{section}", 0)
            mine = local[(local >= start) & (local < start + count)] - start
            if len(mine):
                _, ids, sizes = self._topology(piece, section, mine, count, types=False)
                kinds = np.array([by_size[section].get(int(s), -1) for s in sizes], np.int64)
                if (kinds < 0).any():
                    bad = int(sizes[kinds < 0][0])
                    raise _Bad(f"a cell of <{section}> has {bad} points; the streaming reader takes vertices, "
                               "lines, triangles and quads only (set data.streaming: never)")  # fmt: skip
                groups.append((kinds, ids, sizes))
            start += count
        return groups


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each value's index among them (np.unique is many times slower on millions)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.ones(len(values), bool)
    first[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(values), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return ordered[first], inverse


def _centres_into(out: np.ndarray, types: np.ndarray, sizes: np.ndarray, points: np.ndarray, ids: np.ndarray) -> None:
    """Fill ``out`` with the centres of cells of ``types`` whose points, in order, are ``points[ids]``."""
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for t in np.unique(types):
        t = int(t)
        cells = np.flatnonzero(types == t)
        if t not in LINEAR_CELLS:
            name = _CELL_NAMES.get(t, f"VTK type {t}")
            raise _Bad(f"it has {name} cells, whose centres the streaming reader does not compute "
                       "(set data.streaming: never to read it with VTK)")  # fmt: skip
        k = LINEAR_CELLS[t]
        if (sizes[cells] != k).any():
            raise _Bad(f"a cell of VTK type {t} has {int(sizes[cells][sizes[cells] != k][0])} points, not {k}")
        weights = centre_weights(t)
        centre = np.zeros((len(cells), 3))
        for i in range(k):  # VTK's order of summation
            centre += points[ids[first[cells] + i]] * weights[i]
        out[cells] = centre
