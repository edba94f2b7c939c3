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
