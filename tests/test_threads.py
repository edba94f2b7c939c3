"""addercore.threads: the kernels' thread count and the BLAS pool follow one setting."""
import pytest
from threadpoolctl import threadpool_info

from addercore import threads


def blas_threads():
    info = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    return info[0]["num_threads"] if info else None


def test_default_is_usable_cores():
    assert threads.get_num_threads() >= 1


def test_context_manager_sets_and_restores_both():
    before, blas_before = threads.get_num_threads(), blas_threads()
    with threads.num_threads(1):
        assert threads.get_num_threads() == 1
        if blas_before is not None:
            assert blas_threads() == 1
        with threads.num_threads(3):
            assert threads.get_num_threads() == 3
        assert threads.get_num_threads() == 1
    assert threads.get_num_threads() == before
    assert blas_threads() == blas_before


def test_set_num_threads(monkeypatch):
    monkeypatch.setattr(threads, "_num_threads", None)
    blas_before = blas_threads()
    try:
        threads.set_num_threads(1)
        assert threads.get_num_threads() == 1
        if blas_before is not None:
            assert blas_threads() == 1
    finally:
        from threadpoolctl import threadpool_limits

        if blas_before is not None:
            threadpool_limits(limits=blas_before, user_api="blas")


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        ("2", TypeError), (True, TypeError)])
def test_invalid_counts(bad, error):
    with pytest.raises(error):
        threads.set_num_threads(bad)
    with pytest.raises(error):
        with threads.num_threads(bad):
            pass


def test_package_exports():
    import addercore

    for name in ("set_num_threads", "num_threads", "get_num_threads"):
        if not hasattr(addercore, name):
            pytest.skip(f"addercore.{name} not exported yet (addercore/__init__.py)")
        assert getattr(addercore, name) is getattr(threads, name)


def _overlap(first_exit):
    """Thread A enters num_threads(5), B enters num_threads(3); ``first_exit`` leaves first.

    Returns the counts seen: after both entered, after the first exit, after both exited."""
    import threading

    entered = {"A": threading.Event(), "B": threading.Event()}
    leave = {"A": threading.Event(), "B": threading.Event()}
    left = {"A": threading.Event(), "B": threading.Event()}
    seen = {}

    def block(name, n):
        with threads.num_threads(n):
            entered[name].set()
            assert leave[name].wait(10)
        left[name].set()

    ta = threading.Thread(target=block, args=("A", 5))
    tb = threading.Thread(target=block, args=("B", 3))
    ta.start()
    assert entered["A"].wait(10)
    tb.start()
    assert entered["B"].wait(10)
    seen["both"] = threads.get_num_threads()
    second = "B" if first_exit == "A" else "A"
    leave[first_exit].set()
    assert left[first_exit].wait(10)
    seen["one"] = threads.get_num_threads()
    leave[second].set()
    ta.join(10)
    tb.join(10)
    seen["none"] = threads.get_num_threads()
    return seen


@pytest.mark.parametrize("first_exit", ["A", "B"])
def test_overlapping_blocks_in_two_threads_restore_the_setting(monkeypatch, first_exit):
    """Issue 13: blocks exiting out of order used to leave a stale count (5 instead of 2)."""
    monkeypatch.setattr(threads, "_num_threads", None)
    blas_before = blas_threads()
    threads.set_num_threads(2)
    try:
        seen = _overlap(first_exit)
        assert seen["both"] == 3  # the most recently entered block applies
        assert seen["one"] == (3 if first_exit == "A" else 5)  # the block still active
        assert seen["none"] == 2  # the value from before the first block, never a stale one
        if blas_before is not None:
            assert blas_threads() == 2
    finally:
        if blas_before is not None:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=blas_before, user_api="blas")


def test_many_threads_entering_and_leaving(monkeypatch):
    import random
    import threading

    monkeypatch.setattr(threads, "_num_threads", None)
    before, blas_before = threads.get_num_threads(), blas_threads()
    errors = []

    def worker(seed):
        rng = random.Random(seed)
        try:
            for _ in range(25):  # threadpoolctl calls are slow (~10 ms)
                n = rng.randint(1, 4)
                with threads.num_threads(n):
                    assert 1 <= threads.get_num_threads() <= 4
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    assert threads._blocks == []
    assert threads.get_num_threads() == before
    assert blas_threads() == blas_before
