import struct

import numpy as np
import pytest

from openinsgaussian.data.ply import read_ply, read_ply_elements, read_points, write_ply, write_points
from openinsgaussian.errors import DataError

DTYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "f4", "f8"]


def _random_column(rng, code: str, n: int) -> np.ndarray:
    dt = np.dtype(code)
    if dt.kind == "f":
        # Random bit patterns cover denormals, huge and tiny exponents; drop NaN (NaN != NaN).
        raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8).view(dt)
        raw = raw[np.isfinite(raw)]
        return np.concatenate([raw, np.array([0.0, -0.0, 1.0, 0.1], dtype=dt)])[:n]
    info = np.iinfo(dt)
    vals = rng.integers(info.min, info.max, size=n, endpoint=True, dtype=np.int64).astype(dt)
    vals[:2] = [info.min, info.max]
    return vals


@pytest.mark.parametrize("binary", [True, False])
def test_round_trip_is_bit_exact_for_every_dtype(tmp_path, binary):
    rng = np.random.default_rng(0)
    n = 500
    vertex = {f"p_{code}": _random_column(rng, code, n) for code in DTYPES}
    n = min(len(v) for v in vertex.values())
    vertex = {k: v[:n] for k, v in vertex.items()}
    path = tmp_path / "all.ply"
    write_ply(path, vertex, binary=binary)
    back = read_ply(path)
    assert list(back) == list(vertex)  # insertion order kept
    for name, arr in vertex.items():
        assert back[name].dtype == arr.dtype, name
        assert back[name].tobytes() == arr.tobytes(), name
    assert (b"binary_little_endian" in path.read_bytes()[:100]) == binary


def test_int64_is_narrowed_and_out_of_range_rejected(tmp_path):
    write_ply(tmp_path / "a.ply", {"label": np.array([0, 5, 40], dtype=np.int64)})
    back = read_ply(tmp_path / "a.ply")["label"]
    assert back.dtype == np.int32 and back.tolist() == [0, 5, 40]
    with pytest.raises(DataError, match="outside the int32 range"):
        write_ply(tmp_path / "b.ply", {"label": np.array([2**40], dtype=np.int64)})
    with pytest.raises(DataError, match="differ in length"):
        write_ply(tmp_path / "c.ply", {"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)})


def test_big_endian_read(tmp_path):
    header = (b"ply\nformat binary_big_endian 1.0\ncomment made by hand\nobj_info test\n"
              b"element vertex 2\nproperty float x\nproperty int id\nproperty ushort u\nend_header\n")
    body = struct.pack(">fiH", 1.5, -7, 65000) + struct.pack(">fiH", -2.25, 123456, 3)
    (tmp_path / "be.ply").write_bytes(header + body)
    v = read_ply(tmp_path / "be.ply")
    assert v["x"].tolist() == [1.5, -2.25]
    assert v["id"].tolist() == [-7, 123456]
    assert v["u"].tolist() == [65000, 3]
    assert v["x"].dtype == np.float32 and v["id"].dtype == np.int32 and v["u"].dtype == np.uint16
    assert v["x"].dtype.isnative  # usable by torch without byte swapping


def _mesh_binary(face_first: bool, variable: bool) -> bytes:
    faces = [(0, 1, 2), (2, 1, 0, 1)] if variable else [(0, 1, 2), (2, 1, 0)]
    face_hdr = b"element face 2\nproperty list uchar int vertex_indices\nproperty uchar flag\n"
    vert_hdr = b"element vertex 3\nproperty double x\nproperty uchar red\n"
    face_body = b"".join(struct.pack("<B", len(f)) + struct.pack(f"<{len(f)}i", *f) + b"\x07" for f in faces)
    vert_body = b"".join(struct.pack("<dB", x, r) for x, r in [(0.5, 10), (1.5, 20), (2.5, 30)])
    hdr = b"ply\r\nformat binary_little_endian 1.0\r\n"
    if face_first:
        return hdr + face_hdr + vert_hdr + b"end_header\n" + face_body + vert_body
    return hdr + vert_hdr + face_hdr + b"end_header\n" + vert_body + face_body


@pytest.mark.parametrize("face_first", [True, False])
@pytest.mark.parametrize("variable", [True, False])
def test_face_element_before_and_after_vertex_binary(tmp_path, face_first, variable):
    path = tmp_path / "mesh.ply"
    path.write_bytes(_mesh_binary(face_first, variable))
    v = read_ply(path)
    assert v["x"].tolist() == [0.5, 1.5, 2.5] and v["red"].tolist() == [10, 20, 30]
    els = read_ply_elements(path)
    assert list(els) == (["face", "vertex"] if face_first else ["vertex", "face"])
    assert els["face"]["flag"].tolist() == [7, 7]
    idx = els["face"]["vertex_indices"]
    if variable:
        assert [r.tolist() for r in idx] == [[0, 1, 2], [2, 1, 0, 1]]
    else:
        assert idx.shape == (2, 3) and idx.tolist() == [[0, 1, 2], [2, 1, 0]]


@pytest.mark.parametrize("face_first", [True, False])
def test_face_element_before_and_after_vertex_ascii(tmp_path, face_first):
    face_hdr = "element face 2\nproperty list uchar int vertex_indices\n"
    vert_hdr = "element vertex 3\nproperty float x\nproperty float y\nproperty uchar label\n"
    face_body = "3 0 1 2\n4 2 1 0 1\n"
    vert_body = "0.5 1 3\n1.5 2 4\n-2.5e-3 3 5\n"
    head = "ply\nformat ascii 1.0\ncomment hi\n"
    text = (head + face_hdr + vert_hdr + "end_header\n" + face_body + vert_body if face_first
            else head + vert_hdr + face_hdr + "end_header\n" + vert_body + face_body)
    path = tmp_path / "mesh.ply"
    path.write_text(text)
    v = read_ply(path)
    assert v["x"].tolist() == np.array([0.5, 1.5, -2.5e-3], np.float32).tolist()
    assert v["label"].tolist() == [3, 4, 5] and v["label"].dtype == np.uint8
    faces = read_ply_elements(path)["face"]["vertex_indices"]
    assert [r.tolist() for r in faces] == [[0, 1, 2], [2, 1, 0, 1]]


@pytest.mark.parametrize("binary", [True, False])
def test_truncated_file_names_the_file(tmp_path, binary):
    path = tmp_path / "cut.ply"
    write_ply(path, {"x": np.arange(10, dtype=np.float32)}, binary=binary)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 9])
    with pytest.raises(DataError, match="truncated") as e:
        read_ply(path)
    assert str(path) in str(e.value)


def test_header_errors(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        read_ply(tmp_path / "missing.ply")
    assert "missing.ply" in str(e.value)
    (tmp_path / "a.ply").write_bytes(b"solid cube\n")
    with pytest.raises(DataError, match="magic"):
        read_ply(tmp_path / "a.ply")
    (tmp_path / "b.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n")
    with pytest.raises(DataError, match="end_header"):
        read_ply(tmp_path / "b.ply")
    (tmp_path / "c.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty int64 x\nend_header\n1\n")
    with pytest.raises(DataError, match="unsupported PLY property type 'int64'"):
        read_ply(tmp_path / "c.ply")
    (tmp_path / "d.ply").write_bytes(b"ply\nformat binary_middle_endian 1.0\nend_header\n")
    with pytest.raises(DataError, match="unsupported PLY format"):
        read_ply(tmp_path / "d.ply")
    (tmp_path / "e.ply").write_bytes(b"ply\nformat ascii 1.0\nelement face 1\nproperty list uchar int v\n"
                                     b"end_header\n3 0 1 2\n")
    with pytest.raises(DataError, match="no 'vertex' element"):
        read_ply(tmp_path / "e.ply")
    (tmp_path / "f.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\nabc\n")
    with pytest.raises(DataError, match="not a float32"):
        read_ply(tmp_path / "f.ply")


def test_points_round_trip_and_float_colours(tmp_path):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    labels = rng.integers(0, 41, 50)
    write_points(tmp_path / "p.ply", xyz, rgb, label=labels)
    p, c, extra = read_points(tmp_path / "p.ply")
    assert p.dtype == np.float32 and np.array_equal(p, xyz)
    assert c.dtype == np.uint8 and np.array_equal(c, rgb)
    assert list(extra) == ["label"] and np.array_equal(extra["label"], labels)
    # Colours stored as floats in [0, 1] come back as uint8.
    write_ply(tmp_path / "f.ply", {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                                   "red": np.full(50, 1.0, np.float32), "green": np.full(50, 0.5, np.float32),
                                   "blue": np.zeros(50, np.float32)})
    _, c2, _ = read_points(tmp_path / "f.ply")
    assert c2[0].tolist() == [255, 128, 0]
    write_points(tmp_path / "n.ply", xyz)
    assert read_points(tmp_path / "n.ply")[1] is None
    write_ply(tmp_path / "noz.ply", {"x": xyz[:, 0], "y": xyz[:, 1]})
    with pytest.raises(DataError, match="lacks z"):
        read_points(tmp_path / "noz.ply")
