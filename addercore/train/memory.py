"""Refuse a training step that cannot fit in memory, before the OS kills the process.

The figure: a batch-256 ResNet-20 AdderNet step (float32) needs about 330 MB beyond the model
and the data (peak RSS, ``benchmarks/RESULTS.md``), so about 1.29 MB per image. It is dominated
by the activations kept for the backward pass, so other models scale it by their activation
elements per image (the outputs of their convolution / adder layers) and float64 doubles it.
"""
import os

__all__ = ["step_bytes", "available_bytes", "check_step_memory", "StepMemoryError"]

_RESNET20_STEP_BYTES_PER_IMAGE = 330e6 / 256


class StepMemoryError(ValueError):
    """A training step would need more memory than the machine has available."""


def _activation_elements(model):
    """Elements per 32x32 image written by the convolution / adder layers of ``model``."""
    if model.startswith("resnet"):
        n = (int(model[len("resnet"):]) - 2) // 6  # blocks per stage
        return 16 * 32 * 32 + 2 * n * (16 * 32 * 32 + 32 * 16 * 16 + 64 * 8 * 8)
    if model == "vgg_small":
        return 2 * 128 * 32 * 32 + 2 * 256 * 16 * 16 + 2 * 512 * 8 * 8
    raise ValueError(f"no memory figure for model {model!r}")


def step_bytes(model, batch, dtype="float32"):
    """Estimated bytes of one training step of ``model`` on ``batch`` images (beyond the model
    and the data set)."""
    scale = _activation_elements(model) / _activation_elements("resnet20")
    itemsize = 8 if str(dtype) == "float64" else 4
    return int(batch * _RESNET20_STEP_BYTES_PER_IMAGE * scale * itemsize / 4)


def available_bytes():
    """Memory available to a new allocation (``MemAvailable`` of /proc/meminfo, else free
    physical pages), or None when the system does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_step_memory(model, batch, dtype="float32", available=None):
    """Raise :class:`StepMemoryError` (the estimate, the limit, the largest batch that fits)
    when a training step of ``batch`` images would not fit in ``available`` bytes (default:
    :func:`available_bytes`; no check when unknown). Returns the estimate in bytes."""
    need = step_bytes(model, batch, dtype)
    if available is None:
        available = available_bytes()
    if available is not None and need > available:
        fits = max(int(available // max(step_bytes(model, 1, dtype), 1)), 0)
        raise StepMemoryError(
            f"a training step of {model} ({dtype}) on batches of {batch} images needs about "
            f"{need / 1e9:.1f} GB, but only {available / 1e9:.1f} GB of memory is available: "
            f"use --batch-size {fits} or less (or pass --ignore-memory-check to try anyway)")
    return need
