"""Hostile and damaged files (issue 13): a small file never costs gigabytes, every failure is a
ValueError naming the file, nothing is executed, values no network has are refused.

Every hostile file is built here, small (the largest is a 256 MiB deflate bomb of ~250 KiB).
The memory bombs are loaded in a child process with its address space capped at 3 GiB (a
regression fails the test instead of exhausting the machine); the child reports each load's
outcome and its tracemalloc peak (numpy registers its buffers with tracemalloc), and the test
asserts the peak stays far below what the file declares. ``python tests/test_hostile_files.py
DIR`` writes the files to DIR and prints those figures, for comparing revisions.
"""
import collections
import errno
import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import addercore.io as aio
from addercore.data import load_cifar10, read_idx
from addercore.safe_pickle import RefusedGlobalError, cifar_globals, restricted_loads
from test_io import FakeGlobal, FakeStorage, FakeTensor, TorchPickler, write_legacy, write_zip

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30


# ------------------------------------------------------------------------------------------
# Crafting
# ------------------------------------------------------------------------------------------

class DeclaredStorage(FakeStorage):
    """A storage whose pickled element count is ``numel`` whatever bytes it really has."""

    def __init__(self, key, numel, data=None, name="FloatStorage"):
        super().__init__(key, np.zeros(3, np.float32) if data is None else data, name)
        self._numel = numel

    @property
    def numel(self):
        return self._numel


def _torch_pickle(obj):
    f = io.BytesIO()
    TorchPickler(f, legacy=False).dump(obj)
    return f.getvalue()


def _zip_records(path, records, method=zipfile.ZIP_STORED):
    """Write a zip; a record value ("zeros", n) streams n zero bytes (deflated when asked)."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in records.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = method if isinstance(data, tuple) else zipfile.ZIP_STORED
            if isinstance(data, tuple):
                n, chunk = data[1], bytes(16 * MiB)
                with z.open(info, "w", force_zip64=n > 1 << 31) as f:
                    while n > 0:
                        f.write(chunk[:min(n, len(chunk))])
                        n -= len(chunk)
            else:
                z.writestr(info, data)


def _legacy_prefix():
    return b"".join(pickle.dumps(h, protocol=2) for h in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))


def craft_torch(d):
    """name -> path of each hostile .pth kind."""
    d = Path(d)
    out = {}
    st12 = FakeStorage(0, np.arange(12, dtype=np.float32))
    bomb = {"w": FakeTensor(st12, 0, (1024, 1024, 1024), (0, 0, 0))}  # 4 GiB from 48 bytes
    for fmt, write in (("legacy", write_legacy), ("zip", write_zip)):
        out[f"stride0_{fmt}"] = d / f"stride0_{fmt}.pth"
        write(out[f"stride0_{fmt}"], bomb)
    # overlapping (not broadcast) strides: windows of 2**20 floats advancing by 1
    st = FakeStorage(0, np.zeros(1 << 20, np.float32))
    out["overlap_legacy"] = d / "overlap.pth"
    write_legacy(out["overlap_legacy"], {"w": FakeTensor(st, 0, ((1 << 20) - 1023, 1 << 10), (1, 1))})
    # deflated storage record that inflates to 256 MiB (the was 2 MiB -> 2 GiB)
    n = 256 * MiB
    out["deflate_bomb_zip"] = d / "deflate_bomb.pth"
    _zip_records(out["deflate_bomb_zip"], {
        "archive/data.pkl": _torch_pickle({"w": FakeTensor(DeclaredStorage(0, n // 4), 0, (n // 4,), (1,))}),
        "archive/data/0": ("zeros", n)}, method=zipfile.ZIP_DEFLATED)
    # a 64 MiB deflated byteorder record (the was 1 GiB, stored)
    out["byteorder_bomb_zip"] = d / "byteorder_bomb.pth"
    _zip_records(out["byteorder_bomb_zip"], {
        "archive/data.pkl": _torch_pickle({}), "archive/byteorder": ("zeros", 64 * MiB)},
        method=zipfile.ZIP_DEFLATED)
    # declared sizes of 2**40 elements / bytes
    huge = {"w": FakeTensor(DeclaredStorage(0, 1 << 40), 0, (1 << 40,), (1,))}
    out["numel_2e40_legacy"] = d / "numel_legacy.pth"
    write_legacy(out["numel_2e40_legacy"], huge)
    out["numel_2e40_zip"] = d / "numel_zip.pth"
    write_zip(out["numel_2e40_zip"], huge)
    out["size_2e40_broadcast_zip"] = d / "size_zip.pth"
    write_zip(out["size_2e40_broadcast_zip"], {"w": FakeTensor(st12, 0, (1 << 40, 1 << 40), (0, 0))})
    big_str = b"\x80\x04\x8d" + struct.pack("<Q", 1 << 40) + b"abc"  # BINUNICODE8 of 2**40 bytes
    out["pickle_len_2e40_legacy"] = d / "strlen_legacy.pth"
    out["pickle_len_2e40_legacy"].write_bytes(_legacy_prefix() + big_str)
    out["pickle_len_2e40_header"] = d / "strlen_header.pth"
    out["pickle_len_2e40_header"].write_bytes(big_str)
    out["pickle_len_2e40_zip"] = d / "strlen_zip.pth"
    _zip_records(out["pickle_len_2e40_zip"], {"archive/data.pkl": big_str})
    # many references to one tensor / storage (memo): materialised once, not 10**5 times
    t = FakeTensor(FakeStorage(0, np.zeros(1 << 18, np.float32)), 0, (1 << 18,), (1,))
    out["shared_tensor_zip"] = d / "shared_tensor.pth"
    write_zip(out["shared_tensor_zip"], {"w": [t] * 100_000})
    out["shared_storage_zip"] = d / "shared_storage.pth"
    st1m = FakeStorage(0, np.zeros(1 << 18, np.float32))
    write_zip(out["shared_storage_zip"],
              {f"w{i}": FakeTensor(st1m, 0, (1 << 18,), (1,)) for i in range(1000)})
    return out


class _Reduce:
    def __init__(self, fn, args, state=None):
        self.rv = (fn, args) if state is None else (fn, args, state)

    def __reduce__(self):
        return self.rv


def _cifar_bytes(data, labels):
    return pickle.dumps({b"batch_label": b"hostile", b"labels": labels, b"data": data}, protocol=2)


def craft_cifar(d):
    """name -> path of each hostile CIFAR test_batch, each in its own cifar-10-batches-py."""
    d = Path(d)
    recon = np.zeros(1).__reduce__()[0]
    cases = {
        # the 223-byte file: 2,000,000 images from one byte with zero strides
        "stride0_ndarray": _cifar_bytes(
            _Reduce(np.ndarray, ((2_000_000, 3072), np.dtype(np.uint8), b"\x07", 0, (0, 0))),
            _Reduce(np.ndarray, ((2_000_000,), np.dtype(np.int64), bytes(8), 0, (0,)))),
        # numpy.ndarray(shape) without a buffer: uninitialised heap memory
        "uninitialised_ndarray": _cifar_bytes(
            _Reduce(np.ndarray, ((5, 3072), np.dtype(np.uint8))), [0] * 5),
        "uninitialised_reconstruct": _cifar_bytes(
            _Reduce(recon, (np.ndarray, (5, 3072), b"B")), [0] * 5),
        "short_buffer": _cifar_bytes(
            _Reduce(recon, (np.ndarray, (0,), b"b"), (1, (5, 3072), np.dtype(np.uint8), False, b"x")),
            [0] * 5),
        "huge_shape_short_buffer": _cifar_bytes(
            _Reduce(recon, (np.ndarray, (0,), b"b"),
                    (1, (1 << 40, 3072), np.dtype(np.uint8), False, b"x")), [0] * 5),
        "structured_dtype": _cifar_bytes(np.zeros((5, 3072), dtype=[("a", "u1")]), [0] * 5),
        "bytes_with_size": _cifar_bytes(_Reduce(bytes, (1 << 40,)), [0] * 5),
    }
    # labels = [[[...]]] 100,000 deep (written as opcodes: pickling it here would recurse)
    body = pickle.dumps(np.zeros((5, 3072), np.uint8), protocol=2)[2:-1]
    cases["labels_nested_100000"] = (b"\x80\x02}(X\x06\x00\x00\x00labels" + b"]" * 100_000
                                     + b"a" * 99_999 + b"X\x04\x00\x00\x00data" + body + b"u.")
    laughs = [0] * 1000
    for _ in range(3):  # 10**12 labels by memo references in a few KiB
        laughs = [laughs] * 1000
    cases["labels_billion_laughs"] = _cifar_bytes(np.zeros((5, 3072), np.uint8), laughs)
    cases["data_len_2e40"] = (b"\x80\x04}\x8c\x04data\x8e" + struct.pack("<Q", 1 << 40) + b"x")
    out = {}
    for name, raw in cases.items():
        folder = d / name / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        (folder / "test_batch").write_bytes(raw)
        out[name] = folder
    return out


def _npy(shape, dtype, payload=b""):
    """An .npy file whose header declares ``shape``/``dtype`` followed by ``payload``."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
            "shape": shape})
    return f.getvalue() + payload


def _meta(d=None):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.array(json.dumps(d or {"epoch": 1})))
    return buf.getvalue()


def craft_npz(d):
    d = Path(d)
    out = {"header_4TiB": d / "header_4tib.npz", "deflated_extra_256MiB": d / "extra.npz"}
    _zip_records(out["header_4TiB"], {"__metadata__.npy": _meta(),
                                      "w.npy": _npy((1 << 40,), np.float32, bytes(16))})
    w = io.BytesIO()
    np.lib.format.write_array(w, np.ones(4, np.float32))
    extra = _npy((64 * MiB,), np.float32)  # followed by 256 MiB of deflated zeros
    with zipfile.ZipFile(out["deflated_extra_256MiB"], "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("__metadata__.npy", _meta())
        z.writestr("w.npy", w.getvalue())
        with z.open("extra.npy", "w") as f:
            f.write(extra)
            for _ in range(16):
                f.write(bytes(16 * MiB))
    return out


def craft_mnist(d):
    d = Path(d)
    p = d / "bomb-idx1-ubyte.gz"
    with gzip.open(p, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, 1]) + (256 * MiB).to_bytes(4, "big"))
        for _ in range(16):
            f.write(bytes(16 * MiB))
    return {"gzip_bomb_256MiB": p}


# ------------------------------------------------------------------------------------------
# Loading in a capped child process
# ------------------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np
    import addercore.io as aio
    from addercore.data import load_cifar10, read_idx
    cases = json.loads(sys.stdin.read())
    tracemalloc.start()
    out = {}
    for name, (call, path) in cases.items():
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        try:
            r = eval(call)
            status = ["ok", type(r).__name__]
            del r
        except BaseException as e:
            status = [type(e).__name__, str(e)]
        out[name] = status + [tracemalloc.get_traced_memory()[1] - base]
    out["__maxrss__"] = ["", "", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024]
    print(json.dumps(out))
""")

LOADERS = {"torch": "aio.load_torch_object(path)",
           "cifar": "load_cifar10(path, train=False, download=False)",
           "npz": "aio.load(path)", "mnist": "read_idx(path)"}


def load_in_child(kind, paths, repo=REPO, limit=3 * GiB):
    """{name: (exception type or 'ok', message, tracemalloc peak bytes)} for each file."""
    cases = {name: (LOADERS[kind], str(p)) for name, p in paths.items()}
    env = dict(os.environ, PYTHONPATH=str(repo), OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(limit)], input=json.dumps(cases),
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(repo))
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout)


def _assert_refused(results, paths, match, peak_limit=32 * MiB):
    for name, p in paths.items():
        kind, msg, peak = results[name]
        assert kind in ("ValueError", "RefusedGlobalError"), (name, kind, msg)
        assert str(p) in msg, (name, msg)  # names the file
        assert any(m in msg for m in match), (name, msg)
        assert peak < peak_limit, (name, peak)


# ------------------------------------------------------------------------------------------
# Memory bombs
# ------------------------------------------------------------------------------------------

def test_torch_memory_bombs_refused_before_allocating(tmp_path):
    paths = craft_torch(tmp_path)
    assert paths["stride0_legacy"].stat().st_size < 600  # the was 458 bytes
    assert paths["deflate_bomb_zip"].stat().st_size < 2 * MiB
    res = load_in_child("torch", paths)
    ok = {k: paths.pop(k) for k in ("shared_tensor_zip",)}
    shared_storage = paths.pop("shared_storage_zip")
    _assert_refused(res, paths, ["overlapping/broadcast", "more than this file may allocate",
                                 "at most 16", "expected", "truncated", "file has"])
    for name in ("stride0_legacy", "stride0_zip", "overlap_legacy", "size_2e40_broadcast_zip"):
        assert "overlapping/broadcast strides" in res[name][1], res[name]
    for name in ("deflate_bomb_zip",):
        assert "more than this file may allocate" in res[name][1], res[name]
    assert "byteorder" in res["byteorder_bomb_zip"][1] and "at most 16" in res["byteorder_bomb_zip"][1]
    for name in ("numel_2e40_legacy", "numel_2e40_zip", "pickle_len_2e40_zip",
                 "pickle_len_2e40_legacy", "pickle_len_2e40_header"):
        assert "MemoryError" not in res[name][1], res[name]
    # one tensor referenced 100,000 times is one 1 MiB array; 1000 views of one 1 MiB storage
    # are 1000 copies: over the file's budget of 16x + 64 MiB, refused before the copies
    kind, msg, peak = res["shared_tensor_zip"]
    assert kind == "ok" and peak < 8 * MiB, res["shared_tensor_zip"]
    kind, msg, peak = res["shared_storage_zip"]
    assert kind == "ValueError" and str(shared_storage) in msg and "may allocate" in msg, msg
    assert peak < 128 * MiB, peak


def test_torch_shared_tensor_is_one_array(tmp_path):
    t = FakeTensor(FakeStorage(0, np.arange(4, dtype=np.float32)), 0, (4,), (1,))
    p = tmp_path / "tied.pth"
    write_zip(p, {"a": t, "b": t})
    state = aio.load_torch_checkpoint(p)
    np.testing.assert_array_equal(state["a"], [0, 1, 2, 3])
    assert state["a"] is state["b"]  # tied weights stay tied, as in torch


def test_broadcast_within_budget_and_max_bytes(tmp_path):
    st = FakeStorage(0, np.array([1.5], np.float32))
    p = tmp_path / "bc.pth"
    write_zip(p, {"w": FakeTensor(st, 0, (1000, 1000), (0, 0))})  # 4 MB from 4 bytes
    np.testing.assert_array_equal(aio.load_torch_checkpoint(p)["w"], np.full((1000, 1000), 1.5, np.float32))
    with pytest.raises(ValueError, match=r"overlapping/broadcast strides .* limit of 1000000 bytes"):
        aio.load_torch_checkpoint(p, max_bytes=1_000_000)
    assert aio.default_max_bytes(1000) == 16_000 + 64 * MiB


def test_zip_header_that_lies_is_caught_while_streaming(tmp_path):
    # the directory declares 16 bytes for a record that holds 4 KiB: read stops at 16 and the
    # CRC (of all 4 KiB) fails; a record declaring more than it holds is short
    p = tmp_path / "lie.pth"
    write_zip(p, {"w": FakeTensor(FakeStorage(0, np.arange(4, dtype=np.float32)), 0, (4,), (1,))})
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = z.getinfo("archive/data/0")
    i = raw.index(b"archive/data/0")  # local header: sizes at name offset - 30 + 18/22
    struct.pack_into("<I", raw, i - 30 + 22, 15)  # uncompressed size (local)
    struct.pack_into("<I", raw, i - 30 + 18, 15)
    j = raw.rindex(b"archive/data/0")  # central directory entry
    struct.pack_into("<I", raw, j - 46 + 20, 15)
    struct.pack_into("<I", raw, j - 46 + 24, 15)
    p.write_bytes(bytes(raw))
    assert info.file_size == 16
    with pytest.raises(ValueError, match=r"lie.pth: .*storage .*15 bytes, expected 16"):
        aio.load_torch_checkpoint(p)


def test_cifar_memory_bombs_and_disclosures_refused(tmp_path):
    paths = craft_cifar(tmp_path)
    assert (paths["stride0_ndarray"] / "test_batch").stat().st_size < 400  # the issue's: 223 bytes
    res = load_in_child("cifar", paths)
    _assert_refused(res, paths, ["refused", "needs", "must be", "truncated", "buffer"],
                    peak_limit=16 * MiB)
    assert "refused call numpy.ndarray" in res["stride0_ndarray"][1]
    assert "refused call numpy.ndarray" in res["uninitialised_ndarray"][1]
    assert "uninitialised" in res["uninitialised_reconstruct"][1]
    assert "needs 15360 bytes, its buffer holds 1" in res["short_buffer"][1]
    assert "its buffer holds 1" in res["huge_shape_short_buffer"][1]
    assert "refused numpy dtype" in res["structured_dtype"][1]
    assert "refused bytes(...)" in res["bytes_with_size"][1]
    assert "'labels' must be 5 integers" in res["labels_nested_100000"][1]
    assert "'labels' must be 5 integers" in res["labels_billion_laughs"][1]
    # a 2**40-byte BINBYTES8: numpy-free pickle opcode; the C unpickler sizes its buffer from
    # it (an impossible allocation, refused at once) or reads what the file holds (truncated)
    assert "truncated" in res["data_len_2e40"][1] or \
        "declares a size larger than memory" in res["data_len_2e40"][1]


def test_npz_bombs_refused_before_reading(tmp_path):
    paths = craft_npz(tmp_path)
    assert paths["deflated_extra_256MiB"].stat().st_size < 2 * MiB
    res = load_in_child("npz", paths)
    _assert_refused(res, paths, ["declares shape", "more than this file may allocate"])
    assert "array 'w' declares shape (1099511627776,)" in res["header_4TiB"][1]
    assert "array 'extra'" in res["deflated_extra_256MiB"][1]
    # with the expected model, the extra array is refused by name, before its header is read
    with pytest.raises(ValueError, match="unexpected array 'extra'"):
        aio.load(paths["deflated_extra_256MiB"], expected={"w": np.zeros(4, np.float32)})


def test_mnist_gzip_bomb_refused_before_inflating(tmp_path):
    paths = craft_mnist(tmp_path)
    res = load_in_child("mnist", paths)
    _assert_refused(res, paths, ["more than the limit"])


def test_empty_cifar_batch_is_accepted(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    raw = pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=2)
    assert b"__builtin__\nbytes" in raw  # how Python 3 pickles b"" at protocol 2
    (folder / "test_batch").write_bytes(raw)
    x, y = load_cifar10(tmp_path, train=False, download=False)
    assert x.shape == (0, 3, 32, 32) and x.dtype == np.uint8
    assert y.shape == (0,) and y.dtype == np.int64


def test_cifar_allow_list_admits_only_numpys_own_forms():
    recon = np.zeros(1).__reduce__()[0]
    g = cifar_globals()
    # numpy's pickles of plain arrays in every protocol, incl. empty and 0-d, bytes and str
    for a in (np.arange(6, dtype=np.int64).reshape(2, 3), np.zeros((0, 3072), np.uint8),
              np.float32(2.5), np.array(3.0), np.array([b"ab", b"c"]), np.array(["é"]),
              np.arange(6.0).reshape(2, 3).T):
        for proto in range(6):
            got = restricted_loads(pickle.dumps(a, protocol=proto), g, encoding="bytes")
            assert np.asarray(got).dtype == a.dtype and np.shape(got) == np.shape(a)
            np.testing.assert_array_equal(got, a)
    bad = [
        _Reduce(np.ndarray, ((3,), np.dtype(np.uint8), b"\x01", 0, (0,))),
        _Reduce(recon, (np.ndarray, (2,), b"b")),
        _Reduce(recon, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype(np.uint8), False, b"abc")),
        _Reduce(recon, (np.ndarray, (0,), b"b"), (1, (-1,), np.dtype(np.uint8), False, b"")),
        _Reduce(recon, (np.ndarray, (0,), b"b"), (1, (2,), np.dtype(object), False, [1, 2])),
        _Reduce(np.dtype, ("i4,f8",)),
        _Reduce(np.dtype, ("O",)),
        _Reduce(bytes, (10,)),
    ]
    for obj in bad:
        with pytest.raises(pickle.UnpicklingError):
            restricted_loads(pickle.dumps(obj, protocol=2), g, encoding="bytes")


# ------------------------------------------------------------------------------------------
# Errors that name the file
# ------------------------------------------------------------------------------------------

def _patch_zip(src, dst, name, *, method=None, flags=None):
    """Copy ``src`` setting the compression method / flag bits of record ``name`` (both headers)."""
    raw = bytearray(Path(src).read_bytes())
    nb = name.encode()
    for sig, name_at, flag_at, method_at in ((b"PK\x03\x04", 30, 6, 8), (b"PK\x01\x02", 46, 8, 10)):
        i = 0
        while True:
            i = raw.find(sig, i)
            if i < 0:
                break
            n = struct.unpack_from("<H", raw, i + (26 if sig == b"PK\x03\x04" else 28))[0]
            if raw[i + name_at:i + name_at + n] == nb:
                if method is not None:
                    struct.pack_into("<H", raw, i + method_at, method)
                if flags is not None:
                    struct.pack_into("<H", raw, i + flag_at, flags)
            i += 4
    Path(dst).write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, match", [
    ("method99", "compression method 99"),
    ("encrypted", "encrypted"),
])
def test_zip_method_and_encryption_name_the_file(tmp_path, damage, match):
    kw = {"method": 99} if damage == "method99" else {"flags": 1}
    pth = tmp_path / "ok.pth"
    write_zip(pth, {"w": FakeTensor(FakeStorage(0, np.ones(2, np.float32)), 0, (2,), (1,))})
    npz = tmp_path / "ok.npz"
    aio.save(npz, {"w": np.ones(2)}, {"epoch": 1})
    for src, rec, load in ((pth, "archive/data/0", aio.load_torch_checkpoint),
                           (pth, "archive/data.pkl", aio.load_torch_checkpoint),
                           (npz, "w.npy", aio.load)):
        bad = tmp_path / f"{damage}_{src.name}"
        _patch_zip(src, bad, rec, **kw)
        with pytest.raises(ValueError, match=match) as e:
            load(bad)
        assert str(bad) in str(e.value)


def _legacy_with(payload):
    return _legacy_prefix() + payload


@pytest.mark.parametrize("name, payload, match", [
    ("nested_lists", b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b".", "nested more than 64"),
    ("int_overflow_size", None, "tensor size|expected int|truncated or corrupt"),
    ("list_as_state", b"\x80\x02]q\x00.", "holds a list"),
    ("bad_opcode", b"\x80\x02\xff.", "truncated or corrupt"),
    ("getattr_style", b"\x80\x02N\x85.", "holds a tuple"),
])
def test_damaged_checkpoints_are_value_errors_naming_the_file(tmp_path, name, payload, match):
    if payload is None:  # a tensor whose size is a float
        st = FakeStorage(0, np.ones(2, np.float32))
        buf = io.BytesIO()
        TorchPickler(buf, legacy=True).dump({"w": FakeTensor(st, 0, (2.0,), (1,))})
        payload = buf.getvalue()
    p = tmp_path / f"{name}.pth"
    p.write_bytes(_legacy_with(payload) + pickle.dumps([], protocol=2))
    with pytest.raises(ValueError, match=match) as e:
        aio.load_torch_checkpoint(p)
    assert str(p) in str(e.value)
    assert type(e.value) in (ValueError, RefusedGlobalError) or isinstance(e.value, ValueError)


def test_npz_damage_and_expected_shapes(tmp_path):
    p = tmp_path / "ck.npz"
    aio.save(p, {"conv.weight": np.ones((4, 3, 3, 3), np.float32), "n": np.int64(3)}, {"epoch": 2})
    model = {"conv.weight": np.zeros((4, 3, 3, 3), np.float32), "n": np.zeros((), np.int64)}
    arrays, meta = aio.load(p, expected=model)
    assert meta == {"epoch": 2} and arrays["conv.weight"].shape == (4, 3, 3, 3)
    assert int(arrays["n"]) == 3
    arrays, _ = aio.load(p, expected={"conv.weight": ((4, 3, 3, 3), None)}, allow_extra=True)
    assert set(arrays) == {"conv.weight", "n"}
    with pytest.raises(ValueError, match=r"ck.npz: array 'conv.weight' has shape \(4, 3, 3, 3\) "
                                         r"float32, the model expects \(8, 3, 3, 3\) float32"):
        aio.load(p, expected={"conv.weight": np.zeros((8, 3, 3, 3), np.float32), "n": model["n"]})
    with pytest.raises(ValueError, match=r"'conv.weight' has shape .* float64"):
        aio.load(p, expected={"conv.weight": ((4, 3, 3, 3), np.float64), "n": model["n"]})
    with pytest.raises(ValueError, match="unexpected array 'n'"):
        aio.load(p, expected={"conv.weight": model["conv.weight"]})
    # metadata nested 100,000 deep: json's RecursionError becomes a ValueError naming the file
    deep = tmp_path / "deep.npz"
    _zip_records(deep, {"__metadata__.npy": _npy((), "<U200000") + ("[" * 100_000 + "]" * 100_000)
                        .encode("utf-32-le")})
    with pytest.raises(ValueError, match="deep.npz: corrupt metadata"):
        aio.load(deep)
    # an .npy with a pickled object array is refused from its header
    obj = tmp_path / "obj.npz"
    _zip_records(obj, {"__metadata__.npy": _meta(), "w.npy": _npy((2,), object, b"\x80\x02N.")})
    with pytest.raises(ValueError, match="obj.npz: array 'w' has object dtype"):
        aio.load(obj)


# ------------------------------------------------------------------------------------------
# Values no network has; whole pickled models
# ------------------------------------------------------------------------------------------

def test_check_state_values():
    good = {"w": np.ones(3, np.float32), "bn.running_var": np.ones(2), "n": np.int64(5)}
    assert aio.check_state_values(good) == []
    bad = {"a": np.array([1.0, np.nan, np.inf, -np.inf], np.float32),
           "c": np.ones(2, np.complex64),
           "bn.running_var": np.array([1.0, -0.5, -2.0]),
           "n": np.array([-1], np.int64)}
    problems = aio.check_state_values(bad, "x.pth", on_error="ignore")
    assert problems == ["a: 1 NaN and 2 infinite of 4 values", "c: complex dtype complex64",
                        "bn.running_var: 2 negative variances (min -2)"]
    with pytest.raises(aio.StateValueError, match=r"x.pth: 3 tensor\(s\) hold values"):
        aio.check_state_values(bad, "x.pth")
    with pytest.warns(RuntimeWarning, match="x.pth: 3 tensor"):
        assert len(aio.check_state_values(bad, "x.pth", on_error="warn")) == 3
    with pytest.raises(ValueError, match="on_error"):
        aio.check_state_values(good, on_error="skip")


@pytest.mark.parametrize("value, what", [
    (np.array([1.0, np.nan], np.float32), "1 NaN"),
    (np.array([np.inf, 0], np.float32), "1 infinite"),
    (np.array([1 + 2j], np.complex64), "complex dtype"),
])
def test_load_torch_checkpoint_refuses_bad_values(tmp_path, value, what):
    p = tmp_path / "v.pth"
    name = {np.dtype(np.complex64): "ComplexFloatStorage"}.get(value.dtype)  # others: by dtype
    write_zip(p, {"w": FakeTensor(FakeStorage(0, value, name), 0, value.shape, (1,))})
    with pytest.raises(aio.StateValueError, match=f"v.pth: .*w: .*{what}"):
        aio.load_torch_checkpoint(p)
    with pytest.warns(RuntimeWarning, match=what):
        state = aio.load_torch_checkpoint(p, check_values="warn")
    np.testing.assert_array_equal(state["w"], value)


def test_negative_running_var_refused(tmp_path):
    p = tmp_path / "bn.pth"
    write_legacy(p, {"bn1.running_var": FakeTensor(FakeStorage(0, np.array([1.0, -1e-3], np.float32)),
                                                   0, (2,), (1,))})
    with pytest.raises(aio.StateValueError, match="bn1.running_var: 1 negative"):
        aio.load_torch_checkpoint(p)
    assert aio.load_torch_checkpoint(p, check_values="ignore")["bn1.running_var"][1] < 0


class _Module:
    """Pickles like torch.save(model) of class ``module.name``: GLOBAL, NEWOBJ, BUILD __dict__."""

    def __init__(self, module, name, state):
        self.cls, self.state = FakeGlobal(module, name), state


def _save_module(self, obj):
    self.save(obj.cls)
    self.write(pickle.EMPTY_TUPLE + pickle.NEWOBJ)
    self.memoize(obj)
    self.save(obj.state)
    self.write(pickle.BUILD)


TorchPickler.dispatch[_Module] = _save_module


@pytest.mark.parametrize("module, name", [("__main__", "Net"), ("resnet20", "ResNet"),
                                          ("torch.nn.modules.container", "Sequential")])
def test_pickled_whole_model_refused_with_advice(tmp_path, module, name):
    conv = _Module("torch.nn.modules.conv", "Conv2d", {"_parameters": collections.OrderedDict(
        weight=FakeTensor(FakeStorage(0, np.ones(4, np.float32)), 0, (4,), (1,)))})
    model = _Module(module, name, {"_modules": collections.OrderedDict(conv1=conv)})
    for fmt, write in (("legacy", write_legacy), ("zip", write_zip)):
        p = tmp_path / f"model_{fmt}.pth"
        write(p, model)
        with pytest.raises(aio.PickledModelError, match=r"pickled whole model") as e:
            aio.load_torch_checkpoint(p)
        msg = str(e.value)
        assert str(p) in msg and "torch.save(model.state_dict()" in msg
        assert isinstance(e.value, RefusedGlobalError) and isinstance(e.value, ValueError)


def test_functions_get_the_plain_refusal(tmp_path):
    p = tmp_path / "evil.pth"
    p.write_bytes(_legacy_with(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R."))
    with pytest.raises(RefusedGlobalError) as e:
        aio.load_torch_checkpoint(p)
    assert not isinstance(e.value, aio.PickledModelError)


# ------------------------------------------------------------------------------------------
# Atomic writes on a failing disk / unwritable targets
# ------------------------------------------------------------------------------------------

class _FullDisk(io.RawIOBase):
    """A file whose flush and close fail with ENOSPC, like a full disk (close still closes)."""

    def __init__(self, fd, fail_write):
        self.fd, self.fail_write, self.buf = fd, fail_write, b""

    def writable(self):
        return True

    def write(self, b):
        if self.fail_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.buf += bytes(b)
        return len(b)

    def flush(self):
        if self.buf and not self.closed:
            raise OSError(errno.ENOSPC, "No space left on device")

    def fileno(self):
        return self.fd

    def close(self):
        if self.closed:
            return
        try:
            self.flush()
        finally:
            os.close(self.fd)
            super().close()


@pytest.mark.parametrize("fail_write", [True, False], ids=["in write", "in flush/close"])
def test_atomic_open_full_disk_leaves_nothing(tmp_path, monkeypatch, fail_write):
    path = tmp_path / "ck.npz"
    aio.atomic_write_bytes(path, b"old")
    monkeypatch.setattr(aio.os, "fdopen", lambda fd, mode: _FullDisk(fd, fail_write))
    with pytest.raises(OSError) as e:
        with aio.atomic_open(path) as f:
            f.write(b"new data")
    assert e.value.errno == errno.ENOSPC
    assert str(path) in str(e.value) and "disk full" in str(e.value)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # no .tmp left behind


def test_atomic_open_unwritable_targets_name_the_path(tmp_path, monkeypatch):
    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(IsADirectoryError, match=f"cannot write '{d}': it is a directory"):
        aio.atomic_write_bytes(d, b"x")
    f = tmp_path / "afile"
    f.write_bytes(b"keep")
    with pytest.raises(NotADirectoryError, match=f"'{f}' is a file, not a folder"):
        aio.atomic_write_bytes(f / "sub" / "x.npz", b"x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        aio.atomic_write_bytes(tmp_path / "missing" / "x.npz", b"x")
    assert f.read_bytes() == b"keep" and sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: simulate the refusal instead
        ro.chmod(0o500)
    else:
        real_open = os.open

        def refuse(p, *a, **k):
            if str(p).startswith(str(ro)):
                raise PermissionError(errno.EACCES, "Permission denied", p)
            return real_open(p, *a, **k)
        monkeypatch.setattr(aio.os, "open", refuse)
    try:
        with pytest.raises(PermissionError, match=f"'{ro / 'x.npz'}'.*not writable"):
            aio.save(ro / "x.npz", {"w": np.zeros(2)})
    finally:
        ro.chmod(0o700)
    assert list(ro.iterdir()) == []


# ------------------------------------------------------------------------------------------
# Export to PyTorch's format
# ------------------------------------------------------------------------------------------

# What torch.load(weights_only=True) admits that a state dict needs (torch/_weights_only_unpickler.py)
_WEIGHTS_ONLY_GLOBALS = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2"} | {
    f"torch {n}" for n in ("FloatStorage", "DoubleStorage", "HalfStorage", "LongStorage",
                           "IntStorage", "ShortStorage", "CharStorage", "ByteStorage",
                           "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage")}


def test_save_torch_checkpoint_roundtrip(tmp_path):
    import pickletools

    rng = np.random.default_rng(1)
    state = collections.OrderedDict([
        ("conv1.weight", rng.standard_normal((16, 3, 3, 3)).astype(np.float32)),
        ("bn1.running_mean", rng.standard_normal(16)),                       # float64
        ("bn1.num_batches_tracked", np.array(7822, np.int64)),                # 0-d
        ("big", np.array([2**40, -2**62, 3], np.int64)),
        ("fc.weight", rng.standard_normal((10, 64)).astype(np.float32).T),    # not C-contiguous
        ("swapped", np.arange(5, dtype=">f8")),                               # big-endian
        ("empty", np.zeros((0, 4), np.float32)),
        ("a.mask", np.array([True, False])),
    ])
    p = tmp_path / "export.pth"
    aio.save_torch_checkpoint(p, state)
    got = aio.load_torch_checkpoint(p)
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype.newbyteorder("=") and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        assert names == ["archive/data.pkl", "archive/byteorder"] + [
            f"archive/data/{i}" for i in range(len(state))] + ["archive/version"]
        assert z.read("archive/byteorder") == b"little" and z.read("archive/version") == b"3\n"
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if info.filename.startswith("archive/data/"):
                data_at = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert data_at % 64 == 0, info.filename  # torch aligns records to 64 bytes
        pkl = z.read("archive/data.pkl")
        assert z.read("archive/data/0") == state["conv1.weight"].tobytes()
    assert pkl[:2] == b"\x80\x02"
    globs = {arg for op, arg, _ in pickletools.genops(pkl) if op.name == "GLOBAL"}
    assert globs <= _WEIGHTS_ONLY_GLOBALS, globs
    pickletools.dis(pkl, out=io.StringIO())  # well-formed
    # never overwrites without being asked; overwrite=True replaces atomically
    with pytest.raises(FileExistsError, match="export.pth"):
        aio.save_torch_checkpoint(p, {"x": np.zeros(1)})
    aio.save_torch_checkpoint(p, {"x": np.ones(2, np.float32)}, overwrite=True)
    np.testing.assert_array_equal(aio.load_torch_checkpoint(p)["x"], [1, 1])
    assert sorted(q.name for q in tmp_path.iterdir()) == ["export.pth"]
    with pytest.raises(TypeError, match="dtype"):
        aio.save_torch_checkpoint(tmp_path / "u.pth", {"x": np.zeros(2, np.uint16)})
    with pytest.raises(TypeError, match="keys must be str"):
        aio.save_torch_checkpoint(tmp_path / "u.pth", {1: np.zeros(2)})
    assert not (tmp_path / "u.pth").exists()


def test_save_torch_checkpoint_of_a_model(tmp_path):
    from addercore import models

    net = models.get_model("resnet20", num_classes=10) if hasattr(models, "get_model") else None
    if net is None:
        pytest.skip("addercore.models.get_model not available")
    sd = net.state_dict()
    p = tmp_path / "resnet20.pth"
    aio.save_torch_checkpoint(p, sd)
    back = aio.load_torch_checkpoint(p)
    assert list(back) == list(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])
        assert back[k].dtype == np.asarray(sd[k]).dtype


if __name__ == "__main__":  # python tests/test_hostile_files.py DIR [REPO]: print the figures
    out = Path(sys.argv[1])
    repo = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 3 * GiB
    for kind, craft in (("torch", craft_torch), ("cifar", craft_cifar), ("npz", craft_npz),
                        ("mnist", craft_mnist)):
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        paths = craft(d)
        for name, p in paths.items():
            r = load_in_child(kind, {name: p}, repo=repo, limit=limit)
            kind_, msg, peak = r[name]
            size = p.stat().st_size if p.is_file() else (p / "test_batch").stat().st_size
            print(f"{kind:6s} {name:28s} file {size:>9d} B  peak(tracemalloc) {peak / MiB:9.1f} MiB  "
                  f"maxrss {r['__maxrss__'][2] / MiB:8.1f} MiB  {kind_}: {msg[:90]!r}")
