"""addercore.io / addercore.safe_pickle: PyTorch checkpoints without torch, npz checkpoints,
atomic writes, refusal of malicious pickles. No torch anywhere: the test writes torch-format
files by hand with a pure-Python pickler whose stand-in globals are named like torch's."""
import collections
import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

import addercore.io as aio
from addercore.safe_pickle import RefusedGlobalError, cifar_globals, restricted_loads

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------
# A hand-made torch.save
# ------------------------------------------------------------------------------------------

class FakeGlobal:
    """Pickled as ``GLOBAL module name`` without the module having to exist."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *a):  # save_reduce requires a callable
        raise AssertionError("never called")


_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                  np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                  np.dtype(np.int32): "IntStorage", np.dtype(np.uint8): "ByteStorage",
                  np.dtype(np.bool_): "BoolStorage", np.dtype(np.int16): "ShortStorage",
                  np.dtype(np.int8): "CharStorage"}


class FakeStorage:
    def __init__(self, key, data, name=None):
        self.key, self.data = str(key), np.ascontiguousarray(data)
        self.name = name or _STORAGE_NAMES[self.data.dtype]
        self.view = None  # legacy (view_key, offset, size) into a root FakeStorage

    @property
    def numel(self):
        return self.data.size


class FakeTensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.parameter = parameter

    def __reduce__(self):
        t = (FakeGlobal("torch._utils", "_rebuild_tensor_v2"),
             (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
              collections.OrderedDict()))
        if self.parameter:  # nn.Parameter wraps the tensor
            return (FakeGlobal("torch._utils", "_rebuild_parameter"), (_Reduced(t), True, collections.OrderedDict()))
        return t


class _Reduced:
    def __init__(self, rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv


class TorchPickler(pickle._Pickler):
    """Pure-Python pickler writing FakeGlobal as GLOBAL and storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, f, legacy):
        super().__init__(f, protocol=2)
        self.legacy = legacy
        self.seen = []

    def _save_fake_global(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[FakeGlobal] = _save_fake_global

    def persistent_id(self, obj):
        if not isinstance(obj, FakeStorage):
            return None
        root = obj if obj.view is None else obj.view[0]
        if root not in self.seen:
            self.seen.append(root)
        stype = FakeGlobal("torch", obj.name)
        if self.legacy:
            view = None if obj.view is None else (obj.key, obj.view[1], obj.numel)
            return ("storage", stype, root.key, "cpu", root.numel, view)
        return ("storage", stype, obj.key, "cpu", obj.numel)


def write_legacy(path, obj, sys_info=None, big_endian=False):
    f = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001,
                   sys_info or {"protocol_version": 1001, "little_endian": not big_endian,
                                "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, f, protocol=2)
    p = TorchPickler(f, legacy=True)
    p.dump(obj)
    pickle.dump([s.key for s in p.seen], f, protocol=2)
    order = ">" if big_endian else "<"
    for s in p.seen:
        f.write(struct.pack(order + "q", s.numel))
        f.write(s.data.astype(s.data.dtype.newbyteorder(order)).tobytes())
    Path(path).write_bytes(f.getvalue())


def write_zip(path, obj, prefix="archive"):
    f = io.BytesIO()
    p = TorchPickler(f, legacy=False)
    p.dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", f.getvalue())
        z.writestr(f"{prefix}/byteorder", "little")
        for s in p.seen:
            z.writestr(f"{prefix}/data/{s.key}", s.data.tobytes())
        z.writestr(f"{prefix}/version", "3\n")


def expected(storage, offset, size, stride):
    flat = storage.data
    return np.lib.stride_tricks.as_strided(
        flat[offset:], size, tuple(s * flat.itemsize for s in stride)).copy()


def _sample_state():
    """A state dict exercising dtypes, offsets, strides, shared storages and a Parameter."""
    rng = np.random.default_rng(0)
    shared = FakeStorage(0, rng.standard_normal(40).astype(np.float32))
    tensors = collections.OrderedDict()
    specs = collections.OrderedDict()

    def add(name, st, off, size, stride, **kw):
        tensors[name] = FakeTensor(st, off, size, stride, **kw)
        specs[name] = (st, off, size, stride)

    add("module.conv.weight", shared, 0, (2, 3, 2, 2), (12, 4, 2, 1), parameter=True)
    add("module.transposed", shared, 3, (4, 5), (1, 4))          # column-major view, offset 3
    add("module.strided", shared, 7, (3, 2), (10, 3))            # gaps between elements
    add("module.scalar_view", shared, 39, (), ())
    add("module.f64", FakeStorage(1, rng.standard_normal(6)), 0, (2, 3), (3, 1))
    add("module.f16", FakeStorage(2, rng.standard_normal(4).astype(np.float16)), 1, (3,), (1,))
    add("module.bn.num_batches_tracked", FakeStorage(3, np.array([77220], np.int64)), 0, (), ())
    add("module.i64", FakeStorage(4, np.arange(-5, 7, dtype=np.int64)), 2, (2, 4), (1, 2))
    add("module.i32", FakeStorage(5, np.arange(6, dtype=np.int32)), 0, (6,), (1,))
    add("module.u8", FakeStorage(6, np.arange(250, 256, dtype=np.uint8)), 0, (2, 3), (3, 1))
    add("module.mask", FakeStorage(7, np.array([1, 0, 1, 1], bool)), 0, (4,), (1,))
    add("module.empty", FakeStorage(8, np.zeros(0, np.float32)), 0, (0, 3), (3, 1))
    add("module.broadcast", FakeStorage(9, np.array([2.5], np.float32)), 0, (3, 2), (0, 0))
    return tensors, specs


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_hand_made_checkpoint_roundtrip(tmp_path, fmt):
    tensors, specs = _sample_state()
    path = tmp_path / f"ckpt_{fmt}.pth"
    (write_legacy if fmt == "legacy" else write_zip)(path, tensors)
    state = aio.load_torch_checkpoint(path)
    assert list(state) == list(specs)
    for name, (st, off, size, stride) in specs.items():
        want = expected(st, off, size, stride)
        got = state[name]
        assert got.dtype == st.data.dtype, name
        assert got.shape == tuple(size), name
        assert got.flags.c_contiguous and got.flags.owndata, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert state["module.bn.num_batches_tracked"].dtype == np.int64
    assert int(state["module.bn.num_batches_tracked"]) == 77220
    # copies, not views of one storage: writing one must not change another
    state["module.transposed"][...] = 0
    assert np.any(state["module.conv.weight"] != 0)


def test_zip_any_prefix_and_state_dict_unwrap(tmp_path):
    tensors, specs = _sample_state()
    wrapped = {"epoch": 7, "best_prec1": 91.8, "state_dict": tensors}
    path = tmp_path / "wrapped.pt"
    write_zip(path, wrapped, prefix="resnet20_something")
    state = aio.load_torch_checkpoint(path)
    assert list(state) == list(specs)
    obj = aio.load_torch_object(path)
    assert obj["epoch"] == 7 and obj["best_prec1"] == 91.8


def test_legacy_views_and_big_endian(tmp_path):
    root = FakeStorage("r", np.arange(10, dtype=np.float64))
    view = FakeStorage("v", root.data[4:8])
    view.view = (root, 4)
    t = {"a": FakeTensor(view, 1, (2,), (1,)), "b": FakeTensor(root, 0, (10,), (1,))}
    for big in (False, True):
        path = tmp_path / f"views_{big}.pth"
        write_legacy(path, t, big_endian=big)
        state = aio.load_torch_checkpoint(path)
        np.testing.assert_array_equal(state["a"], [5.0, 6.0])
        np.testing.assert_array_equal(state["b"], np.arange(10.0))
        assert state["b"].dtype.byteorder in "=|" or state["b"].dtype.isnative


def test_bfloat16_widened_exactly(tmp_path):
    vals = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)
    bits = (vals.view(np.uint32) >> 16).astype(np.uint16)
    path = tmp_path / "bf16.pt"
    write_zip(path, {"w": FakeTensor(FakeStorage(0, bits, name="BFloat16Storage"), 0, (4,), (1,))})
    got = aio.load_torch_checkpoint(path)["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vals)


def test_out_of_bounds_view_is_an_error_not_a_read(tmp_path):
    st = FakeStorage(0, np.zeros(4, np.float32))
    path = tmp_path / "oob.pth"
    write_legacy(path, {"w": FakeTensor(st, 2, (3,), (1,))})
    with pytest.raises(ValueError, match="reaches element 4 of a storage with 4 elements"):
        aio.load_torch_checkpoint(path)


def test_strip_prefix():
    s = {"module.a": 1, "module.b.module.c": 2, "d": 3}
    assert aio.strip_prefix(s) == {"a": 1, "b.module.c": 2, "d": 3}
    assert aio.strip_prefix(s, "x.") == s


def test_real_authors_checkpoint(shared_data):
    path = shared_data("pretrained", "ResNet20-AdderNet.pth")
    state = aio.load_torch_checkpoint(path)
    assert len(state) == 132
    assert all(k.startswith("module.") for k in state)
    assert state["module.conv1.weight"].shape == (16, 3, 3, 3)
    assert state["module.layer1.0.conv1.adder"].shape == (16, 16, 3, 3)
    assert state["module.layer2.0.downsample.0.adder"].shape == (32, 16, 1, 1)
    assert state["module.fc.weight"].shape == (10, 64, 1, 1)
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            assert v.dtype == np.int64 and v.shape == ()
        else:
            assert v.dtype == np.float32, k
            assert np.all(np.isfinite(v)), k
    assert np.all(state["module.bn1.running_var"] > 0)
    plain = aio.strip_prefix(state)
    assert "layer3.2.bn2.running_mean" in plain and "bn2.weight" in plain


def test_real_checkpoint_truncated_everywhere(shared_data, tmp_path):
    data = shared_data("pretrained", "ResNet20-AdderNet.pth").read_bytes()
    for cut in (0, 10, 20, 100, 5000, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.pth"
        p.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|corrupt|not a PyTorch"):
            aio.load_torch_checkpoint(p)


def test_corrupt_files_are_value_errors(tmp_path):
    tensors, _ = _sample_state()
    z = tmp_path / "z.pt"
    write_zip(z, tensors)
    data = z.read_bytes()
    cases = {
        "garbage": os.urandom(300),
        "zip_truncated": data[: len(data) // 2],
        "empty": b"",
        "not_a_state_dict": None,
    }
    for name, raw in cases.items():
        p = tmp_path / f"{name}.pt"
        if raw is None:
            write_zip(p, [FakeTensor(FakeStorage(0, np.zeros(2, np.float32)), 0, (2,), (1,))])
        else:
            p.write_bytes(raw)
        with pytest.raises(ValueError):
            aio.load_torch_checkpoint(p)
    # a zip whose storage record is missing
    p = tmp_path / "missing_record.pt"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(p, "w") as dst:
        for n in src.namelist():
            if not n.endswith("data/0"):
                dst.writestr(n, src.read(n))
    with pytest.raises(ValueError, match="missing storage record"):
        aio.load_torch_checkpoint(p)


# ------------------------------------------------------------------------------------------
# Malicious pickles
# ------------------------------------------------------------------------------------------

class Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_legacy_and_zip(tmp_path):
    marker = tmp_path / "pwned"
    # sanity: a plain pickle.loads of this payload *would* create the marker
    payload = pickle.dumps({"w": Evil(marker)}, protocol=2)
    assert b"system" in payload
    for fmt in ("legacy", "zip", "header"):
        p = tmp_path / f"evil_{fmt}.pth"
        if fmt == "zip":
            with zipfile.ZipFile(p, "w") as z:
                z.writestr("archive/data.pkl", payload)
        elif fmt == "legacy":
            p.write_bytes(b"".join(pickle.dumps(h, protocol=2)
                                   for h in (0x1950A86A20F9469CFC6C, 1001, {})) + payload)
        else:  # attack in the very first (magic number) pickle
            p.write_bytes(payload)
        with pytest.raises(RefusedGlobalError, match=r"refused global '(posix|nt|os)\.system'"):
            aio.load_torch_checkpoint(p)
        assert not marker.exists(), f"{fmt}: the payload ran"


@pytest.mark.parametrize("payload", [
    b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",
    b"\x80\x02cbuiltins\ngetattr\n.",
    # protocol 4 STACK_GLOBAL with a dotted name: an attribute of an allowed class
    b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.fromkeys\x93.",
    b"\x80\x02ctorch\nload\n.",
    b"\x80\x02csubprocess\nPopen\n.",
])
def test_other_globals_refused(payload):
    allowed = aio._torch_globals()
    with pytest.raises(RefusedGlobalError, match="refused global"):
        restricted_loads(payload, allowed)
    with pytest.raises(RefusedGlobalError):
        restricted_loads(payload, cifar_globals())


def test_cifar_allow_list_limits():
    # numpy arrays round-trip; object arrays and odd codecs do not
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 3, 4, 5):
        np.testing.assert_array_equal(restricted_loads(pickle.dumps(a, protocol=proto), cifar_globals()), a)
    assert restricted_loads(pickle.dumps(b"\x00\xff", protocol=2), cifar_globals()) == b"\x00\xff"
    with pytest.raises(pickle.UnpicklingError, match="object"):
        restricted_loads(pickle.dumps(np.array([None, 1], dtype=object), protocol=2), cifar_globals())
    with pytest.raises(pickle.UnpicklingError, match="encoding"):
        restricted_loads(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.",
                         cifar_globals())


def test_no_plain_pickle_load_in_package():
    """Project rule: pickle.load/loads never touch a file; only the restricted unpickler."""
    for py in (REPO / "addercore").rglob("*.py"):
        text = py.read_text()
        assert "pickle.load(" not in text and "pickle.loads(" not in text, py


# ------------------------------------------------------------------------------------------
# addercore .npz checkpoints and atomic writes
# ------------------------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int64(5),
              "mask": np.array([True, False]), "f64": np.linspace(0, 1, 5),
              "layer1.0.conv1.adder": np.ones((2, 2, 3, 3), np.float64)}
    meta = {"epoch": 3, "rng": {"state": [1, 2, 3]}, "name": "résumé"}
    path = tmp_path / "ck.npz"
    aio.save(path, arrays, meta)
    got, m = aio.load(path)
    assert m == meta
    assert set(got) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(got[k], arrays[k])
        assert got[k].dtype == np.asarray(arrays[k]).dtype
    with np.load(path, allow_pickle=False) as z:  # readable without pickles by anyone
        assert "w" in z.files
    aio.save(path, {}, None)
    assert aio.load(path) == ({}, {})
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temp files left


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="object dtype"):
        aio.save(tmp_path / "a.npz", {"x": np.array([None])})
    with pytest.raises(TypeError, match="JSON"):
        aio.save(tmp_path / "a.npz", {}, {"x": object()})
    with pytest.raises(ValueError, match="reserved"):
        aio.save(tmp_path / "a.npz", {aio.METADATA_KEY: np.zeros(1)})
    with pytest.raises(TypeError, match="dict"):
        aio.save(tmp_path / "a.npz", [np.zeros(1)])
    assert not any(tmp_path.iterdir())


def test_load_truncated_or_corrupt(tmp_path):
    path = tmp_path / "ck.npz"
    aio.save(path, {"w": np.random.default_rng(0).standard_normal(10000)}, {"epoch": 1})
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=f"cut{cut}.npz"):
            aio.load(bad)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError):
        aio.load(tmp_path / "flip.npz")
    np.savez(tmp_path / "foreign.npz", w=np.zeros(2))
    with pytest.raises(ValueError, match="not an addercore checkpoint"):
        aio.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        aio.load(tmp_path / "absent.npz")


def test_atomic_open_exception_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    aio.atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with aio.atomic_open(path) as f:
            f.write(b"new partial")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    aio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_atomic_save_survives_sigkill(tmp_path):
    """A writer killed (SIGKILL) in the middle of save() never corrupts the checkpoint."""
    path = tmp_path / "ckpt.npz"
    aio.save(path, {"w": np.zeros(4)}, {"version": 0})
    script = textwrap.dedent(f"""
        import numpy as np, addercore.io as aio
        big = np.ones(16_000_000)  # 128 MB per save: slow enough to be caught mid-write
        i = 1
        while True:
            aio.save({str(path)!r}, {{"w": big * i}}, {{"version": i}})
            i += 1
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".tmp") and p.stat().st_size > 1_000_000
                      for p in tmp_path.iterdir()):
            assert proc.poll() is None, "writer exited early"
            assert time.monotonic() < deadline, "writer never started writing"
            time.sleep(0.005)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    arrays, meta = aio.load(path)  # complete: either the initial or a fully written version
    v = meta["version"]
    if v == 0:
        np.testing.assert_array_equal(arrays["w"], np.zeros(4))
    else:
        assert arrays["w"].shape == (16_000_000,) and arrays["w"][0] == v and arrays["w"][-1] == v
