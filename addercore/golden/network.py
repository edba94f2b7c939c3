"""The whole-network golden kind's model: the authors' CIFAR ResNet at any stage widths.

Kept in one function so that, once :class:`addercore.models.ResNetCIFAR` takes ``widths=``,
:func:`build_network` becomes a single constructor call and ``_narrow_resnet_class`` goes.
"""
import numpy as np

__all__ = ["build_network"]


def build_network(p, rng=None, dtype=np.float64):
    """The authors' CIFAR ResNet (addercore.models.ResNetCIFAR), float64; other widths than
    (16, 32, 64) give the same topology and state-dict names at that width."""
    from ..models import ResNetCIFAR

    args = (tuple(p["layers"]), p["num_classes"], p["kind"], p["norm"], p["eta"],
            np.dtype(dtype), rng)
    if tuple(p.get("widths", (16, 32, 64))) == (16, 32, 64):
        return ResNetCIFAR(*args)
    return _narrow_resnet_class()(tuple(p["widths"]), *args)


def _narrow_resnet_class():
    from .. import nn
    from ..models import ResNetCIFAR

    class NarrowResNetCIFAR(ResNetCIFAR):
        """ResNetCIFAR with stage widths ``widths`` instead of (16, 32, 64)."""

        def __init__(self, widths, layers, num_classes, kind, norm, eta, dtype, rng):
            nn.Module.__init__(self)
            self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
            cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dtype)
            w1, w2, w3 = widths
            self.inplanes = w1
            self.conv1 = nn.Conv2d(3, w1, 3, stride=1, padding=1, bias=False, rng=rng,
                                   dtype=dtype)
            self.bn1 = nn.BatchNorm2d(w1, dtype=dtype)
            self.relu = nn.ReLU()
            self.layer1 = self._make_layer(cfg, w1, layers[0])
            self.layer2 = self._make_layer(cfg, w2, layers[1], stride=2)
            self.layer3 = self._make_layer(cfg, w3, layers[2], stride=2)
            self.avgpool = nn.AvgPool2d(8, stride=1)
            self.fc = nn.Conv2d(w3, num_classes, 1, bias=False, rng=rng, dtype=dtype)
            self.bn2 = nn.BatchNorm2d(num_classes, dtype=dtype)
            self.flatten = nn.Flatten()

    return NarrowResNetCIFAR
