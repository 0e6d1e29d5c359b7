"""Small numpy PLY reader/writer (ascii, binary little/big endian).

Point clouds (ScanNet ``points3d.ply``, label PLYs, Gaussian checkpoints) are PLY files. Reading the
``vertex`` element of a binary file is a single structured-array view of the bytes; other elements
(e.g. mesh ``face`` lists before or after the vertices) are parsed or skipped as needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_open

# PLY scalar type name -> numpy dtype (native order; the byte order is applied per file).
PLY_TYPES: dict[str, np.dtype] = {
    name: np.dtype(code)
    for names, code in (
        (("char", "int8"), "i1"),
        (("uchar", "uint8"), "u1"),
        (("short", "int16"), "i2"),
        (("ushort", "uint16"), "u2"),
        (("int", "int32"), "i4"),
        (("uint", "uint32"), "u4"),
        (("float", "float32"), "f4"),
        (("double", "float64"), "f8"),
    )
    for name in names
}
# numpy dtype -> the classic PLY type name used when writing (read by every PLY tool).
_WRITE_NAMES: dict[np.dtype, str] = {
    np.dtype(c): n
    for c, n in (("i1", "char"), ("u1", "uchar"), ("i2", "short"), ("u2", "ushort"),
                 ("i4", "int"), ("u4", "uint"), ("f4", "float"), ("f8", "double"))
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class _Property:
    name: str
    dtype: np.dtype  # item type (native order)
    count_dtype: np.dtype | None = None  # set for list properties


@dataclass
class _Element:
    name: str
    count: int
    properties: list[_Property]

    @property
    def has_lists(self) -> bool:
        return any(p.count_dtype is not None for p in self.properties)


@dataclass
class _Header:
    fmt: str  # "ascii" | "binary_little_endian" | "binary_big_endian"
    elements: list[_Element]
    body_offset: int  # byte offset of the first data byte


# ---- header -------------------------------------------------------------------------------------
def _parse_header(path: Path, data: bytes) -> _Header:
    if not data.startswith(b"ply"):
        raise DataError(path, "not a PLY file (missing 'ply' magic line)")
    end = data.find(b"\nend_header") + 1  # at a line start, so a comment cannot fake it
    if end <= 0:
        raise DataError(path, "bad PLY header: no 'end_header' line")
    nl = data.find(b"\n", end)
    body_offset = len(data) if nl < 0 else nl + 1
    try:
        text = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise DataError(path, "bad PLY header: non-ASCII bytes before 'end_header'") from None

    fmt: str | None = None
    elements: list[_Element] = []
    for lineno, raw in enumerate(text.splitlines()[1:], start=2):
        parts = raw.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        key = parts[0]
        try:
            if key == "format":
                if parts[1] not in _FORMATS:
                    raise DataError(path, f"unsupported PLY format {parts[1]!r} (line {lineno})",
                                    "expected ascii, binary_little_endian or binary_big_endian")
                fmt = parts[1]
            elif key == "element":
                count = int(parts[2])
                if count < 0:
                    raise ValueError
                elements.append(_Element(parts[1], count, []))
            elif key == "property":
                if not elements:
                    raise DataError(path, f"bad PLY header: property before any element (line {lineno})")
                if parts[1] == "list":
                    prop = _Property(parts[4], _ply_type(path, parts[3]), _ply_type(path, parts[2]))
                else:
                    prop = _Property(parts[2], _ply_type(path, parts[1]))
                elements[-1].properties.append(prop)
            else:
                raise DataError(path, f"bad PLY header: unknown keyword {key!r} (line {lineno})")
        except (IndexError, ValueError):
            raise DataError(path, f"bad PLY header line {lineno}: {raw.strip()!r}") from None
    if fmt is None:
        raise DataError(path, "bad PLY header: no 'format' line")
    return _Header(fmt, elements, body_offset)


def _ply_type(path: Path, name: str) -> np.dtype:
    try:
        return PLY_TYPES[name]
    except KeyError:
        raise DataError(path, f"unsupported PLY property type {name!r}",
                        f"supported: {', '.join(sorted(PLY_TYPES))}") from None


# ---- binary body --------------------------------------------------------------------------------
def _binary_element(path: Path, data: bytes, offset: int, el: _Element, order: str,
                    want: bool) -> tuple[dict[str, np.ndarray] | None, int]:
    """Parse (``want``) or skip one element at ``offset``; returns (properties, next offset)."""
    remaining = len(data) - offset
    if not el.has_lists:
        dt = np.dtype([(p.name, p.dtype.newbyteorder(order)) for p in el.properties])
        need = dt.itemsize * el.count
        if need > remaining:
            raise DataError(path, f"truncated PLY: element '{el.name}' with {el.count} rows needs {need} "
                            f"bytes but only {remaining} remain",
                            "the file is cut short or the count in the header is wrong")
        if not want:
            return None, offset + need
        arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
        return {p.name: arr[p.name].astype(p.dtype) for p in el.properties}, offset + need
    if el.count == 0:
        return ({p.name: np.zeros((0,), p.dtype) for p in el.properties} if want else None), offset

    # Lists: assume every row has the lengths of the first row (triangle meshes), verify, else walk.
    def truncated() -> DataError:
        return DataError(path, f"truncated PLY: element '{el.name}' ({el.count} rows) runs past the end of the file",
                         "the file is cut short or the count in the header is wrong")

    fields, pos = [], offset
    for p in el.properties:
        if p.count_dtype is None:
            fields.append((p.name, p.dtype.newbyteorder(order)))
            pos += p.dtype.itemsize
        else:
            cdt = p.count_dtype.newbyteorder(order)
            if pos + cdt.itemsize > len(data):
                raise truncated()
            n = int(np.frombuffer(data, cdt, 1, pos)[0])
            fields.append((f"__n_{p.name}", cdt))
            fields.append((p.name, p.dtype.newbyteorder(order), (n,)))
            pos += cdt.itemsize + n * p.dtype.itemsize
    dt = np.dtype(fields)
    if dt.itemsize * el.count <= remaining:
        arr = np.frombuffer(data, dtype=dt, count=el.count, offset=offset)
        firsts = arr[:1]
        if all((arr[f] == firsts[f]).all() for f, *_ in fields if f.startswith("__n_")):
            out = {p.name: arr[p.name].astype(p.dtype) for p in el.properties} if want else None
            return out, offset + dt.itemsize * el.count
    # Variable-length rows: walk them (slow path, only for mixed polygon meshes).
    rows: dict[str, list] = {p.name: [] for p in el.properties}
    pos = offset
    for _ in range(el.count):
        for p in el.properties:
            if p.count_dtype is None:
                if pos + p.dtype.itemsize > len(data):
                    raise truncated()
                if want:
                    rows[p.name].append(np.frombuffer(data, p.dtype.newbyteorder(order), 1, pos)[0])
                pos += p.dtype.itemsize
            else:
                cdt = p.count_dtype.newbyteorder(order)
                if pos + cdt.itemsize > len(data):
                    raise truncated()
                n = int(np.frombuffer(data, cdt, 1, pos)[0])
                pos += cdt.itemsize
                if pos + n * p.dtype.itemsize > len(data):
                    raise truncated()
                if want:
                    rows[p.name].append(np.frombuffer(data, p.dtype.newbyteorder(order), n, pos).astype(p.dtype))
                pos += n * p.dtype.itemsize
    return (_assemble(el, rows) if want else None), pos


def _assemble(el: _Element, rows: dict[str, list]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for p in el.properties:
        if p.count_dtype is None:
            out[p.name] = np.asarray(rows[p.name], dtype=p.dtype)
        else:
            obj = np.empty(len(rows[p.name]), dtype=object)
            obj[:] = rows[p.name]
            out[p.name] = obj  # [N] object array of 1-D arrays (variable-length lists)
    return out


# ---- ascii body ---------------------------------------------------------------------------------
def _ascii_element(path: Path, tokens: list[bytes], pos: int, el: _Element,
                   want: bool) -> tuple[dict[str, np.ndarray] | None, int]:
    if not el.has_lists:
        n = len(el.properties)
        need = n * el.count
        if pos + need > len(tokens):
            raise DataError(path, f"truncated PLY: element '{el.name}' with {el.count} rows needs {need} values "
                            f"but only {len(tokens) - pos} remain", "the file is cut short or the count is wrong")
        if not want:
            return None, pos + need
        block = np.array(tokens[pos:pos + need]).reshape(el.count, n) if need else np.zeros((0, n), "S1")
        out = {}
        for j, p in enumerate(el.properties):
            out[p.name] = _parse_column(path, el, p, block[:, j])
        return out, pos + need
    rows: dict[str, list] = {p.name: [] for p in el.properties}
    try:
        for _ in range(el.count):
            for p in el.properties:
                if p.count_dtype is None:
                    if want:
                        rows[p.name].append(tokens[pos])
                    pos += 1
                else:
                    n = int(tokens[pos])
                    if pos + 1 + n > len(tokens):
                        raise IndexError
                    if want:
                        items = np.array(tokens[pos + 1:pos + 1 + n], dtype="S")
                        rows[p.name].append(_parse_column(path, el, p, items))
                    pos += 1 + n
    except IndexError:
        raise DataError(path, f"truncated PLY: element '{el.name}' ({el.count} rows) runs past the end of the file",
                        "the file is cut short or the count in the header is wrong") from None
    except ValueError:
        raise DataError(path, f"bad PLY data in element '{el.name}': a list length is not an integer") from None
    if not want:
        return None, pos
    for p in el.properties:
        if p.count_dtype is None:
            rows[p.name] = list(_parse_column(path, el, p, np.array(rows[p.name], dtype="S")))
    out = _assemble(el, rows)
    for p in el.properties:  # constant-length lists become [N, L] arrays, like the binary path
        v = out[p.name]
        if p.count_dtype is not None and len(v) and len({len(r) for r in v}) == 1:
            out[p.name] = np.stack(list(v)).astype(p.dtype)
    return out, pos


def _parse_column(path: Path, el: _Element, p: _Property, col: np.ndarray) -> np.ndarray:
    try:
        if p.dtype.kind == "f":
            # Through float64: the shortest decimal of a float32 reads back to the same float32.
            return col.astype(np.float64).astype(p.dtype)
        return col.astype(np.int64).astype(p.dtype)
    except ValueError:
        raise DataError(path, f"bad PLY data: property '{p.name}' of element '{el.name}' has a value "
                        f"that is not a {p.dtype.name}") from None


# ---- public reading API -------------------------------------------------------------------------
def _read(path: str | Path, only: str | None) -> dict[str, dict[str, np.ndarray]]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "PLY file not found") from None
    except (IsADirectoryError, PermissionError, OSError) as e:
        raise DataError(path, f"cannot read PLY file ({e.strerror or e})") from None
    header = _parse_header(path, data)
    names = [e.name for e in header.elements]
    if only is not None and only not in names:
        raise DataError(path, f"PLY file has no '{only}' element (elements: {', '.join(names) or 'none'})")
    out: dict[str, dict[str, np.ndarray]] = {}
    if header.fmt == "ascii":
        try:
            tokens = data[header.body_offset:].split()
        except MemoryError:  # pragma: no cover - only for absurd files
            raise DataError(path, "PLY file too large to parse as ascii") from None
        pos = 0
        for el in header.elements:
            want = only is None or el.name == only
            props, pos = _ascii_element(path, tokens, pos, el, want)
            if props is not None:
                out[el.name] = props
            if only is not None and el.name == only:
                break
    else:
        order = _FORMATS[header.fmt]
        offset = header.body_offset
        for el in header.elements:
            want = only is None or el.name == only
            props, offset = _binary_element(path, data, offset, el, order, want)
            if props is not None:
                out[el.name] = props
            if only is not None and el.name == only:
                break
    return out


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """The ``vertex`` element's properties by name, ``[N]`` each, dtypes as in the file (native order)."""
    return _read(path, "vertex")["vertex"]


def read_ply_elements(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Every element of the file: ``{element: {property: array}}``.

    Scalar properties are ``[N]`` arrays; list properties are ``[N, L]`` when every row has the same
    length ``L`` (triangle faces) and ``[N]`` object arrays of 1-D arrays otherwise.
    """
    return _read(path, None)


# ---- writing ------------------------------------------------------------------------------------
def _prepare_column(path: Path, name: str, arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 1:
        raise DataError(path, f"PLY property '{name}' must be a 1-D array, got shape {a.shape}")
    if a.dtype == np.bool_:
        return a.astype(np.uint8)
    if a.dtype in (np.dtype(np.int64), np.dtype(np.uint64)):
        # numpy's default integer; PLY has no 64-bit ints, so narrow when the values fit.
        target = np.dtype(np.int32) if a.dtype.kind == "i" else np.dtype(np.uint32)
        info = np.iinfo(target)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise DataError(path, f"PLY property '{name}' has values outside the {target.name} range",
                            "PLY stores at most 32-bit integers")
        return a.astype(target)
    native = a.dtype.newbyteorder("=") if a.dtype.byteorder not in ("=", "|") else a.dtype
    if native not in _WRITE_NAMES:
        raise DataError(path, f"PLY property '{name}' has unsupported dtype {a.dtype}",
                        "use int8/16/32, uint8/16/32, float32 or float64")
    return a.astype(native, copy=False)


def write_ply(path: str | Path, vertex: Mapping[str, np.ndarray], *, binary: bool = True,
              comments: tuple[str, ...] = ()) -> None:
    """Write one ``vertex`` element with the given ``[N]`` properties, in insertion order.

    The PLY type follows each array's dtype. int64/uint64 (numpy's default integers) are stored as
    int32/uint32 when the values fit, and bool as uchar. Binary files are little endian. The write is
    atomic (temp file + rename).
    """
    path = Path(path)
    if not vertex:
        raise DataError(path, "cannot write a PLY file without vertex properties")
    bad = [name for name in vertex if not name or any(c.isspace() for c in name)]
    if bad:
        raise DataError(path, f"PLY property names must be non-empty without spaces, got {bad}")
    cols = {name: _prepare_column(path, name, a) for name, a in vertex.items()}
    lengths = {len(a) for a in cols.values()}
    if len(lengths) != 1:
        raise DataError(path, "PLY vertex properties differ in length: "
                        + ", ".join(f"{k}={len(v)}" for k, v in cols.items()))
    n = lengths.pop()
    lines = ["ply", f"format {'binary_little_endian' if binary else 'ascii'} 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {n}")
    lines += [f"property {_WRITE_NAMES[a.dtype]} {name}" for name, a in cols.items()]
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")

    if binary:
        dt = np.dtype([(name, a.dtype.newbyteorder("<")) for name, a in cols.items()])
        rec = np.empty(n, dtype=dt)
        for name, a in cols.items():
            rec[name] = a
        body = rec.tobytes()
    else:
        body = _ascii_body(cols, n)
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(body)


def _ascii_body(cols: dict[str, np.ndarray], n: int) -> bytes:
    if n == 0:
        return b""
    # str() of a numpy float scalar is its shortest round-trip decimal, so ascii reads back bit-exactly.
    table = np.stack([np.array([str(v) for v in a], dtype=str) if a.dtype.kind == "f" else a.astype(str)
                      for a in cols.values()], axis=1)  # [N, n_props]
    return ("\n".join(" ".join(row) for row in table.tolist()) + "\n").encode("ascii")


# ---- point-cloud convenience --------------------------------------------------------------------
_COLOR_NAMES = ("red", "green", "blue")


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """``(xyz [P,3] float32, rgb [P,3] uint8 | None, extras {name: [P]})`` from a point-cloud PLY.

    Colours may be stored as uchar or as floats in [0, 1].
    """
    path = Path(path)
    v = dict(read_ply(path))
    missing = [c for c in "xyz" if c not in v]
    if missing:
        raise DataError(path, f"PLY vertex element lacks {', '.join(missing)} (has: {', '.join(v)})")
    xyz = np.stack([v.pop(c).astype(np.float32) for c in "xyz"], axis=1)  # [P,3]
    rgb = None
    if all(c in v for c in _COLOR_NAMES):
        chans = [v.pop(c) for c in _COLOR_NAMES]
        if chans[0].dtype.kind == "f":
            rgb = np.clip(np.round(np.stack(chans, 1).astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        else:
            stacked = np.stack(chans, 1)
            if stacked.size and (stacked.min() < 0 or stacked.max() > 255):
                raise DataError(path, "PLY colours are integers outside 0..255", "store them as uchar")
            rgb = stacked.astype(np.uint8)
    return xyz, rgb, v


def write_points(path: str | Path, xyz: np.ndarray, rgb: np.ndarray | None = None, *,
                 binary: bool = True, **extra: np.ndarray) -> None:
    """Write ``xyz [P,3]`` (float32), optional ``rgb [P,3]`` (uchar) and extra ``[P]`` properties."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    vertex: dict[str, np.ndarray] = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.dtype.kind == "f":
            rgb = np.clip(np.round(rgb * 255.0), 0, 255)
        rgb = rgb.astype(np.uint8).reshape(-1, 3)
        vertex.update(red=rgb[:, 0], green=rgb[:, 1], blue=rgb[:, 2])
    vertex.update(extra)
    write_ply(path, vertex, binary=binary)
