"""The whole-network golden kind's model: the authors' CIFAR ResNet at any stage widths."""
import numpy as np

__all__ = ["build_network"]


def build_network(p, rng=None, dtype=np.float64):
    """The authors' CIFAR ResNet (:class:`addercore.models.ResNetCIFAR`), float64 by default;
    other widths than (16, 32, 64) give the same topology and state-dict names at that width."""
    from ..models import ResNetCIFAR

    return ResNetCIFAR(tuple(p["layers"]), p["num_classes"], p["kind"], p["norm"], p["eta"],
                       np.dtype(dtype), rng, widths=tuple(p.get("widths", (16, 32, 64))))
