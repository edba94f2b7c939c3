"""Evaluation on a test set, and loading trained weights into a model."""
from pathlib import Path

import numpy as np

from .. import functional as F
from .. import io as aio
from ..data import BatchLoader
from ..data.transforms import CIFAR10_MEAN, CIFAR10_STD, normalize
from ..tensor import no_grad

__all__ = ["evaluate", "load_weights"]


def evaluate(model, images, labels, batch_size=100, dtype=np.float32, mean=CIFAR10_MEAN,
             std=CIFAR10_STD):
    """Mean cross-entropy and top-1 accuracy (fraction) of ``model`` in eval mode on uint8
    ``images`` (N, C, H, W) / int ``labels`` (N,). Returns ``(loss, accuracy)``."""
    loader = BatchLoader(images, labels, batch_size, shuffle=False, augment=False,
                         dtype=dtype, mean=mean, std=std)
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for xb, yb in loader:
                logits = model(xb)
                loss_sum += float(F.cross_entropy(logits, yb).data) * len(yb)
                correct += int((logits.data.argmax(axis=1) == yb).sum())
                seen += len(yb)
    finally:
        model.train(was_training)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def precise_bn_batches(train_x, n, seed, batch_size, dtype=np.float32):
    """The batches BatchNorm statistics are re-estimated on (``--precise-bn``): ``n`` training
    images ``train_x`` (N, 3, H, W) uint8, a fixed random choice seeded by ``seed`` (no
    augmentation; the same every time), normalised, in batches of about ``batch_size`` images
    (sizes differ by one at most, so that every batch's statistics carry the same weight as in
    training). Yields float arrays of ``dtype``."""
    n = min(n, len(train_x))
    choice = np.sort(np.random.default_rng([seed, 0x9BC]).permutation(len(train_x))[:n])
    for part in np.array_split(choice, -(-n // batch_size)):
        yield normalize(train_x[part], dtype=dtype)


def load_weights(model, path):
    """Load model weights from an addercore checkpoint (``checkpoint.npz`` / ``best.npz``) or a
    PyTorch ``.pth`` state dict (``module.`` prefixes stripped), strictly. Returns metadata."""
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".tar"):
        state = aio.strip_prefix(aio.load_torch_checkpoint(path))
        model.load_state_dict(state, strict=True)
        return {}
    arrays, meta = aio.load(path)
    state = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    if not state:
        from ..quant.model import FORMAT as INTEGER_FORMAT

        if meta.get("format") == INTEGER_FORMAT:
            raise ValueError(f"{path} is a quantised integer model (addercore quantize), not "
                             f"float weights: evaluate it with examples/eval_pretrained.py "
                             f"--quantized {path}")
        raise ValueError(f"{path}: no model weights (no 'model.*' arrays)")
    model.load_state_dict(state, strict=True)
    return meta
