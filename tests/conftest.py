"""Shared test helpers. ``shared_data_path(*parts)`` locates ``../shared/data`` (the real
CIFAR-10 batches and the authors' checkpoint): a missing file skips the test, except under
``CI=true`` where it fails (CI must never silently skip the real-data tests)."""
import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data_path(*parts):
    """Path of ``shared/data/<parts>``; skip (or fail under CI=true) when it does not exist."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        msg = f"shared data file {p} is absent (expected the repository's ../shared/data)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg + "; CI=true, so this is an error, not a skip")
        pytest.skip(msg)
    return p


@pytest.fixture
def shared_data():
    """The :func:`shared_data_path` function, as a fixture."""
    return shared_data_path


# The default run stays fast: tests marked ``slow`` (minutes each) run only when asked for,
# with ``-m slow`` (or any other ``-m`` expression) or under CI=true, where CI runs them all.
_SLOW_LEFT_OUT = []


def pytest_collection_modifyitems(config, items):
    if config.getoption("markexpr") or os.environ.get("CI") == "true":
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)
        _SLOW_LEFT_OUT[:] = slow


def pytest_terminal_summary(terminalreporter):
    if _SLOW_LEFT_OUT:
        terminalreporter.write_line(
            f"{len(_SLOW_LEFT_OUT)} slow test(s) left out of the default run; run them with "
            f"`python -m pytest -m slow` (CI=true runs everything)")


def synthetic_cifar(n, seed):
    """Learnable synthetic CIFAR-like data, ``(uint8 (n, 3, 32, 32), int64 (n,))``: the class
    sets the mean colour of the image, so a few steps of training beat chance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    base = (y[:, None] * 25 + np.array([0, 80, 160])) % 256
    x = np.clip(base[:, :, None, None] + rng.normal(0, 30, (n, 3, 32, 32)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def layer_case(shape, dtype, seed=0):
    """Random operands of one 2-d layer: ``shape`` = (N, Cin, H, W, Cout, kh, kw, stride,
    padding) with pairs for stride/padding -> (x, weight, grad_output, stride, padding),
    standard normal values of ``dtype``."""
    n, cin, h, w, cout, kh, kw, stride, padding = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin, h, w)).astype(dtype)
    weight = rng.standard_normal((cout, cin, kh, kw)).astype(dtype)
    ho = (h + 2 * padding[0] - kh) // stride[0] + 1
    wo = (w + 2 * padding[1] - kw) // stride[1] + 1
    g = rng.standard_normal((n, cout, ho, wo)).astype(dtype)
    return x, weight, g, stride, padding
