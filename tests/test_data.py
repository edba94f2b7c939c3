"""addercore.data: CIFAR/MNIST readers (real batches in ../shared/data, archives built here),
download logic (file:// URLs, no network), augmentation, and the resumable loader."""
import gzip
import hashlib
import io
import json
import os
import pickle
import tarfile
import time

import numpy as np
import pytest

from addercore.data import (
    CIFAR10_MEAN, CIFAR10_STD, BatchLoader, DataNotFoundError, load_cifar10, load_cifar100,
    load_mnist, normalize, random_crop_flip, read_idx,
)
from addercore.data.cifar import CIFAR_SPECS
from addercore.data.download import download_url as download_url_real
from addercore.safe_pickle import RefusedGlobalError


# ------------------------------------------------------------------------------------------
# Real CIFAR-10
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cifar_train():
    from conftest import shared_data_path
    return load_cifar10(shared_data_path("cifar-10-batches-py"), train=True, download=False)


def test_real_cifar10_train(cifar_train):
    x, y = cifar_train
    assert x.shape == (50000, 3, 32, 32) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert y.shape == (50000,) and y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == [5000] * 10
    means = x.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(means, CIFAR10_MEAN, atol=2e-4)


def test_real_cifar10_test_from_folder_and_parent(shared_data):
    folder = shared_data("cifar-10-batches-py")
    x, y = load_cifar10(folder, train=False, download=False)
    assert x.shape == (10000, 3, 32, 32) and y.dtype == np.int64
    assert y[:8].tolist() == [3, 8, 8, 0, 6, 6, 1, 6]
    assert np.bincount(y).tolist() == [1000] * 10
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)) / 255, (0.4942, 0.4851, 0.4504), atol=2e-4)
    x2, y2 = load_cifar10(folder.parent, train=False, download=False)  # the parent directory
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_real_batch_truncated_names_file(shared_data, tmp_path):
    raw = shared_data("cifar-10-batches-py", "test_batch").read_bytes()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for cut in (100, len(raw) // 2, len(raw) - 5):
        (folder / "test_batch").write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=r"test_batch.*(truncated|corrupt)"):
            load_cifar10(tmp_path, train=False, download=False)


# ------------------------------------------------------------------------------------------
# Archives and corrupt files built here
# ------------------------------------------------------------------------------------------

def _batch_bytes(n, seed, label_keys=(("labels", 10),)):
    rng = np.random.default_rng(seed)
    d = {b"batch_label": b"synthetic", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         b"filenames": [b"x.png"] * n}
    for key, k in label_keys:
        d[key.encode()] = rng.integers(0, k, n).tolist()
    return pickle.dumps(d, protocol=2), d


def _make_tar(path, folder, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _cifar10_archive(tmp_path, n=7):
    members, want = {}, {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        members[name], want[name] = _batch_bytes(n, i)
    members["batches.meta"] = pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2)
    return _make_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members), want


def test_cifar10_from_tar_gz(tmp_path):
    archive, want = _cifar10_archive(tmp_path)
    for root in (archive, tmp_path):  # the archive itself, or a directory holding it
        x, y = load_cifar10(root, train=True, download=False)
        assert x.shape == (35, 3, 32, 32) and y.shape == (35,) and y.dtype == np.int64
        exp = np.concatenate([want[f"data_batch_{j}"][b"data"] for j in range(1, 6)])
        np.testing.assert_array_equal(x.reshape(35, -1), exp)
        np.testing.assert_array_equal(y, sum((want[f"data_batch_{j}"][b"labels"] for j in range(1, 6)), []))
        xt, yt = load_cifar10(root, train=False, download=False)
        np.testing.assert_array_equal(yt, want["test_batch"][b"labels"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]  # not extracted


def test_cifar100_from_tar_gz(tmp_path):
    keys = (("fine_labels", 100), ("coarse_labels", 20))
    tr, dtr = _batch_bytes(9, 1, keys)
    te, dte = _batch_bytes(4, 2, keys)
    _make_tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python",
              {"train": tr, "test": te, "meta": b""})
    x, y = load_cifar100(tmp_path, train=True, download=False)
    assert x.shape == (9, 3, 32, 32)
    np.testing.assert_array_equal(y, dtr[b"fine_labels"])
    _, yc = load_cifar100(tmp_path, train=False, download=False, labels="coarse")
    np.testing.assert_array_equal(yc, dte[b"coarse_labels"])


def test_wrong_or_broken_archive(tmp_path):
    wrong = _make_tar(tmp_path / "other.tar.gz", "something", {"readme.txt": b"hi"})
    with pytest.raises(ValueError, match="wrong archive.*data_batch_1"):
        load_cifar10(wrong, download=False)
    notgz = tmp_path / "bad.tar.gz"
    notgz.write_bytes(b"this is not a gzip file at all" * 10)
    with pytest.raises(ValueError, match="bad.tar.gz"):
        load_cifar10(notgz, download=False)
    (tmp_path / "x").mkdir()
    archive, _ = _cifar10_archive(tmp_path / "x")
    raw = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.tar.gz"):
        load_cifar10(cut, download=False)


def test_corrupt_batches_name_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good, d = _batch_bytes(5, 0)
    cases = {
        "garbage": os.urandom(500),
        "wrong_shape": pickle.dumps({b"data": np.zeros((5, 100), np.uint8), b"labels": [0] * 5}, protocol=2),
        "wrong_dtype": pickle.dumps({b"data": np.zeros((5, 3072), np.float32), b"labels": [0] * 5}, protocol=2),
        "label_count": pickle.dumps({b"data": np.zeros((5, 3072), np.uint8), b"labels": [0] * 4}, protocol=2),
        "label_range": pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, protocol=2),
        "no_labels": pickle.dumps({b"data": np.zeros((5, 3072), np.uint8)}, protocol=2),
        "a_list": pickle.dumps([1, 2], protocol=2),
    }
    for name, raw in cases.items():
        (folder / "test_batch").write_bytes(raw)
        with pytest.raises(ValueError, match="test_batch") as e:
            load_cifar10(tmp_path, train=False, download=False)
        assert not isinstance(e.value, FileNotFoundError), name


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_batch_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(RefusedGlobalError, match="system"):
        load_cifar10(tmp_path, train=False, download=False)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# Search order and download (no network: file:// URLs)
# ------------------------------------------------------------------------------------------

@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("ADDERCORE_DATA", raising=False)
    return home


def test_search_order_env_then_cache(tmp_path, isolated_home, monkeypatch):
    env_dir = tmp_path / "envdata"
    env_dir.mkdir()
    cache = isolated_home / ".cache" / "addercore"
    cache.mkdir(parents=True)
    _, want_cache = _cifar10_archive(cache, n=3)
    _, want_env = _cifar10_archive(env_dir, n=4)
    monkeypatch.setenv("ADDERCORE_DATA", str(env_dir))
    x, _ = load_cifar10(train=False, download=False)
    assert x.shape[0] == 4  # $ADDERCORE_DATA first
    monkeypatch.setenv("ADDERCORE_DATA", str(tmp_path / "empty"))
    x, _ = load_cifar10(train=False, download=False)
    assert x.shape[0] == 3  # then the cache


def test_not_found_message(tmp_path, isolated_home, monkeypatch):
    monkeypatch.setenv("ADDERCORE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(train=True, download=False)
    msg = str(e.value)
    assert isinstance(e.value, FileNotFoundError)
    assert str(tmp_path / "nowhere") in msg and str(isolated_home / ".cache" / "addercore") in msg
    assert "download=False" in msg and CIFAR_SPECS["cifar10"]["url"] in msg and "ADDERCORE_DATA" in msg
    assert "Errno" not in msg


def test_download_into_cache_with_md5(tmp_path, isolated_home, monkeypatch, capsys):
    src = tmp_path / "server"
    src.mkdir()
    archive, want = _cifar10_archive(src, n=3)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "url", archive.as_uri())
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "md5", md5)
    x, y = load_cifar10(train=False)
    np.testing.assert_array_equal(y, want["test_batch"][b"labels"])
    cached = isolated_home / ".cache" / "addercore" / "cifar-10-python.tar.gz"
    assert cached.read_bytes() == archive.read_bytes()
    assert "downloading cifar-10-python.tar.gz" in capsys.readouterr().err
    archive.unlink()  # second call must use the cache, not the URL
    load_cifar10(train=True)


def test_download_md5_mismatch_and_offline(tmp_path, isolated_home, monkeypatch):
    src = tmp_path / "server"
    src.mkdir()
    archive, _ = _cifar10_archive(src, n=2)
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "url", archive.as_uri())
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "md5", "0" * 32)
    with pytest.raises(DataNotFoundError, match="md5 mismatch"):
        load_cifar10(train=False)
    cache = isolated_home / ".cache" / "addercore"
    assert not cache.exists() or not any(cache.iterdir())  # no partial or bad archive kept
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "url", (tmp_path / "missing.tar.gz").as_uri())
    with pytest.raises(DataNotFoundError, match="Download from .* failed"):
        load_cifar10(train=False)
    # an explicit root is where the download goes, when asked for (download="root")
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "url", archive.as_uri())
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "md5", hashlib.md5(archive.read_bytes()).hexdigest())
    load_cifar10(tmp_path / "myroot", train=False, progress=False, download="root")
    assert (tmp_path / "myroot" / "cifar-10-python.tar.gz").is_file()


# ------------------------------------------------------------------------------------------
# An explicit root that does not hold the data: reported, never downloaded or written into
# ------------------------------------------------------------------------------------------

@pytest.fixture
def no_download(monkeypatch):
    """Replace the downloader: any call is recorded and fails the test."""
    import addercore.data.cifar as cifar_module
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(cifar_module, "download_url", refuse)
    return calls


def _tree(root):
    """Every path under ``root`` with its size and mtime: a snapshot to prove nothing changed."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def _cifar10_folder(parent, names=None, n=3):
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate(names or [f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        (folder / name).write_bytes(_batch_bytes(n, i)[0])
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"] * 10}, protocol=2))
    return folder


def test_absent_root_is_an_error_naming_it_not_a_download(tmp_path, isolated_home, no_download):
    (tmp_path / "cifar-data").mkdir()
    typo = tmp_path / "cifar-dtaa"
    for download, how in ((True, "add --download"), (False, "Download is disabled")):
        with pytest.raises(DataNotFoundError) as e:
            load_cifar10(typo, train=True, download=download)
        msg = str(e.value)
        assert f"{typo} does not exist" in msg and "not found" in msg and how in msg
        assert f"Did you mean {tmp_path / 'cifar-data'}?" in msg
    assert not typo.exists() and no_download == []
    assert not (isolated_home / ".cache").exists()  # nor silently into the cache instead


def test_absent_root_next_to_the_archive_names_it(tmp_path, no_download):
    archive, _ = _cifar10_archive(tmp_path)
    with pytest.raises(DataNotFoundError, match=f"Did you mean {archive}"):
        load_cifar10(tmp_path / "cifar-10-python", train=False)
    assert no_download == []


def test_cifar100_folder_given_for_cifar10(tmp_path, no_download):
    folder = tmp_path / "c100" / "cifar-100-python"
    folder.mkdir(parents=True)
    keys = (("fine_labels", 100), ("coarse_labels", 20))
    for name in ("train", "test"):
        (folder / name).write_bytes(_batch_bytes(4, 0, keys)[0])
    (folder / "meta").write_bytes(b"")
    before = _tree(tmp_path)
    for root in (tmp_path / "c100", folder):
        for download in (True, False, "root"):  # even an explicit download request is refused
            with pytest.raises(DataNotFoundError) as e:
                load_cifar10(root, train=True, download=download)
            msg = str(e.value)
            assert "CIFAR-100" in msg and "--dataset cifar100" in msg and "left untouched" in msg
    assert _tree(tmp_path) == before and no_download == []
    x, _ = load_cifar100(tmp_path / "c100", train=False, download=False)  # the hint is right
    assert x.shape == (4, 3, 32, 32)


def test_cifar10_archive_given_for_cifar100(tmp_path, no_download):
    archive, _ = _cifar10_archive(tmp_path)
    with pytest.raises(ValueError, match="is the CIFAR-10 archive.*--dataset cifar10"):
        load_cifar100(archive, download="root")
    assert no_download == []


def test_batch_file_given_for_its_folder(tmp_path, no_download):
    folder = _cifar10_folder(tmp_path)
    with pytest.raises(ValueError, match=f"one batch file: use --data-dir {folder} "):
        load_cifar10(folder / "test_batch", train=False)


def test_incomplete_folder_lists_the_missing_batches(tmp_path, no_download):
    names = ["data_batch_1", "data_batch_2", "data_batch_4", "data_batch_5", "test_batch"]
    folder = _cifar10_folder(tmp_path / "data", names)
    before = _tree(tmp_path)
    for root in (tmp_path / "data", folder):
        for download in (True, False, "root"):
            with pytest.raises(DataNotFoundError) as e:
                load_cifar10(root, train=True, download=download)
            msg = str(e.value)
            assert f"{folder} holds an incomplete CIFAR-10: missing data_batch_3 (has " in msg
            assert "left untouched" in msg
    assert _tree(tmp_path) == before and no_download == []
    x, _ = load_cifar10(tmp_path / "data", train=False)  # the split that is there still loads
    assert x.shape == (3, 3, 32, 32)


def test_parent_of_the_data_names_the_right_path(tmp_path, no_download):
    folder = _cifar10_folder(tmp_path / "datasets" / "cifar")
    before = _tree(tmp_path)
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(tmp_path, train=False, download="root")
    assert f"use --data-dir {folder}." in str(e.value)
    assert _tree(tmp_path) == before and no_download == []
    load_cifar10(folder, train=False)  # the suggested path works


def test_unrelated_directory_is_reported_and_downloaded_into_only_when_asked(
        tmp_path, isolated_home, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("hi")
    before = _tree(tmp_path)
    import addercore.data.cifar as cifar_module
    calls = []
    monkeypatch.setattr(cifar_module, "download_url", lambda *a, **k: calls.append(a) or 1 / 0)
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(mine, train=False)  # download=True: the cache only, not an explicit root
    msg = str(e.value)
    assert f"{mine} holds no CIFAR-10" in msg and "cifar-10-batches-py" in msg
    assert "add --download" in msg and "download='root'" in msg
    assert calls == [] and _tree(tmp_path) == before
    # asked for: the archive goes into that directory, md5-checked (file:// URL, no network)
    src = tmp_path / "server"
    src.mkdir()
    archive, want = _cifar10_archive(src, n=2)
    monkeypatch.setattr(cifar_module, "download_url", download_url_real)
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "url", archive.as_uri())
    monkeypatch.setitem(CIFAR_SPECS["cifar10"], "md5", hashlib.md5(archive.read_bytes()).hexdigest())
    _, y = load_cifar10(mine, train=False, download="root", progress=False)
    np.testing.assert_array_equal(y, want["test_batch"][b"labels"])
    assert sorted(p.name for p in mine.iterdir()) == ["cifar-10-python.tar.gz", "notes.txt"]


def test_download_argument_is_checked(tmp_path):
    with pytest.raises(ValueError, match="download: expected True, False or 'root', got 'yes'"):
        load_cifar10(tmp_path, download="yes")


# ------------------------------------------------------------------------------------------
# MNIST
# ------------------------------------------------------------------------------------------

def _idx(arr, code):
    head = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return head + arr.tobytes()


def test_mnist_idx(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 6).astype(np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs, 0x08)))
    (raw / "train-labels-idx1-ubyte").write_bytes(_idx(labels, 0x08))
    x, y = load_mnist(tmp_path, train=True)
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], imgs)
    np.testing.assert_array_equal(y, labels)
    f = np.arange(6, dtype=">f4").reshape(2, 3)
    (tmp_path / "f.idx").write_bytes(_idx(f, 0x0D))
    got = read_idx(tmp_path / "f.idx")
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, f)
    (tmp_path / "t.idx").write_bytes(_idx(imgs, 0x08)[:-1])
    with pytest.raises(ValueError, match="t.idx"):
        read_idx(tmp_path / "t.idx")
    (tmp_path / "g.idx").write_bytes(gzip.compress(_idx(imgs, 0x08))[:-20])
    with pytest.raises(ValueError, match="g.idx"):
        read_idx(tmp_path / "g.idx")
    with pytest.raises(DataNotFoundError, match="t10k-images"):
        load_mnist(tmp_path, train=False)


# ------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------

def test_normalize():
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 5, 5), dtype=np.uint8)
    for dt in (np.float32, np.float64):
        got = normalize(x, dtype=dt)
        assert got.dtype == dt and got.shape == x.shape
        want = (x / 255.0 - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[:, None, None]
        np.testing.assert_allclose(got, want, rtol=1e-6 if dt == np.float32 else 1e-12, atol=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        normalize(x.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        normalize(x[0])
    with pytest.raises(ValueError, match="3 values"):
        normalize(x, mean=(0.5,), std=(0.5,))


def test_random_crop_flip_is_shifted_window_or_mirror():
    rng0 = np.random.default_rng(0)
    x = rng0.integers(1, 256, (64, 3, 32, 32), dtype=np.uint8)  # no zeros: padding is visible
    out = random_crop_flip(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    seen_offsets, seen_flips = set(), set()
    for i in range(64):
        windows = {(dy, dx): padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)}
        matches = [(dy, dx, fl) for (dy, dx), w in windows.items() for fl in (False, True)
                   if np.array_equal(out[i], w[..., ::-1] if fl else w)]
        assert matches, f"image {i} is not a crop of the padded image"
        seen_offsets.add(matches[0][:2])
        seen_flips.add(matches[0][2])
    assert len(seen_offsets) > 20 and seen_flips == {False, True}
    # determinism: same generator state, same result; different seed, different result
    np.testing.assert_array_equal(out, random_crop_flip(x, np.random.default_rng(1)))
    assert not np.array_equal(out, random_crop_flip(x, np.random.default_rng(2)))
    # padding 0, no flip: identity
    np.testing.assert_array_equal(random_crop_flip(x, rng0, padding=0, flip=False), x)
    flipped = random_crop_flip(x[:1], np.random.default_rng(0), padding=0)
    assert np.array_equal(flipped, x[:1]) or np.array_equal(flipped, x[:1, ..., ::-1])
    with pytest.raises(TypeError, match="Generator"):
        random_crop_flip(x, 0)
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(x, rng0, padding=-1)


def test_augmentation_is_cheap():
    """Augment + normalise of 256 images must cost far less than a training step (~0.3 s)."""
    x = np.random.default_rng(0).integers(0, 256, (256, 3, 32, 32), dtype=np.uint8)
    rng = np.random.default_rng(0)
    best = min(_timed(lambda: normalize(random_crop_flip(x, rng))) for _ in range(5))
    assert best < 0.03, f"augmentation took {best * 1e3:.1f} ms per 256 images"


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------
# Loader
# ------------------------------------------------------------------------------------------

def _toy(n=50):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), np.arange(n) % 10


def _drain(loader, epochs):
    out = []
    for _ in range(epochs):
        out += [(x.copy(), y.copy()) for x, y in loader]
    return out


def _same(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_loader_basics():
    x, y = _toy(50)
    L = BatchLoader(x, y, 16, shuffle=True, augment=True, seed=5)
    assert len(L) == 4
    batches = _drain(L, 1)
    assert [b[0].shape for b in batches] == [(16, 3, 8, 8)] * 3 + [(2, 3, 8, 8)]
    assert all(b[0].dtype == np.float32 and b[1].dtype == np.int64 for b in batches)
    assert sorted(np.concatenate([b[1] for b in batches]).tolist()) == sorted(y.tolist())
    assert L.epoch == 1
    assert len(BatchLoader(x, y, 16, drop_last=True)) == 3
    # unshuffled, unaugmented: the data in order, normalised
    plain = _drain(BatchLoader(x, y, 50, shuffle=False, dtype=np.float64), 1)
    np.testing.assert_array_equal(plain[0][0], normalize(x, dtype=np.float64))
    # epochs differ, seeds reproduce, prefetch changes nothing
    two = _drain(BatchLoader(x, y, 16, seed=5, augment=True), 2)
    _same(two[:4], batches)
    assert not np.array_equal(two[0][1], two[4][1])
    _same(two, _drain(BatchLoader(x, y, 16, seed=5, augment=True, prefetch=False), 2))
    assert not np.array_equal(_drain(BatchLoader(x, y, 16, seed=6, augment=True), 1)[0][1], two[0][1])


@pytest.mark.parametrize("stop_after", [0, 1, 3, 4, 6])
def test_loader_resume_is_exact(stop_after):
    """Interrupting after any number of batches and resuming from a JSON round-tripped
    state_dict draws exactly the batches of an uninterrupted run."""
    x, y = _toy(50)
    kw = dict(batch_size=16, shuffle=True, augment=True, seed=11)
    full = _drain(BatchLoader(x, y, **kw), 3)  # 12 batches
    first = BatchLoader(x, y, **kw)
    got, state = [], None
    while len(got) < stop_after:
        for xb, yb in first:
            got.append((xb.copy(), yb.copy()))
            state = json.loads(json.dumps(first.state_dict()))
            if len(got) == stop_after:
                break
    resumed = BatchLoader(x, y, **kw)
    if state is not None:
        resumed.load_state_dict(state)
    while len(got) < len(full):
        got += [(xb.copy(), yb.copy()) for xb, yb in resumed]
    _same(got, full)


def test_loader_state_validation():
    x, y = _toy(50)
    L = BatchLoader(x, y, 16, seed=1)
    state = L.state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(x, y, 8, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        BatchLoader(x, y, 16, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="invalid position"):
        L.load_state_dict(dict(state, batch=99))
    with pytest.raises(TypeError, match="uint8"):
        BatchLoader(x.astype(np.float32), y, 16)
    with pytest.raises(ValueError, match="labels"):
        BatchLoader(x, y[:-1], 16)
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(x, y, 0)
    L.set_epoch(5)
    assert L.state_dict()["epoch"] == 5 and L.state_dict()["batch"] == 0


def test_loader_on_real_data(cifar_train):
    x, y = cifar_train
    L = BatchLoader(x[:1000], y[:1000], 256, augment=True, seed=0)
    xb, yb = next(iter(L))
    assert xb.shape == (256, 3, 32, 32) and xb.dtype == np.float32
    # normalised real data: roughly zero mean, finite
    assert np.isfinite(xb).all() and abs(float(xb.mean())) < 0.5


def test_shared_data_helper_skips_locally_fails_in_ci(monkeypatch):
    from conftest import shared_data_path
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="absent"):
        shared_data_path("no-such-file")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        shared_data_path("no-such-file")
