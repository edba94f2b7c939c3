"""VGG-small for CIFAR (the paper's Table 1 network, from LQ-Nets).

``features``: conv 3→128 (multiplication, first layer) → BN → ReLU → conv 128→128 → MaxPool 2
→ BN → ReLU → conv 128→256 → BN → ReLU → conv 256→256 → MaxPool → BN → ReLU → conv 256→512 →
BN → ReLU → conv 512→512 → MaxPool → BN → ReLU; ``classifier``: Linear 512·4·4→classes
(multiplication, last layer). The five inner 3×3 convolutions are adder layers for
``kind="adder"``. Input (N, 3, 32, 32) -> logits (N, num_classes).
"""
import numpy as np

from .. import nn
from ._common import MaxPool2d, body_conv, check_common

__all__ = ["VGGSmall", "vgg_small"]


class VGGSmall(nn.Module):
    def __init__(self, num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32,
                 rng=None):
        super().__init__()
        dt = check_common(num_classes, kind, norm, eta, dtype)
        self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
        cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dt)

        def bn_relu(c):
            return [nn.BatchNorm2d(c, dtype=dt), nn.ReLU()]

        layers = [nn.Conv2d(3, 128, 3, padding=1, bias=False, rng=rng, dtype=dt), *bn_relu(128),
                  body_conv(cfg, 128, 128, 3, padding=1), MaxPool2d(2), *bn_relu(128),
                  body_conv(cfg, 128, 256, 3, padding=1), *bn_relu(256),
                  body_conv(cfg, 256, 256, 3, padding=1), MaxPool2d(2), *bn_relu(256),
                  body_conv(cfg, 256, 512, 3, padding=1), *bn_relu(512),
                  body_conv(cfg, 512, 512, 3, padding=1), MaxPool2d(2), *bn_relu(512),
                  nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512 * 4 * 4, num_classes, rng=rng, dtype=dt)

    def forward(self, x):
        """x: (N, 3, 32, 32) -> logits (N, num_classes)."""
        return self.classifier(self.features(x))


def vgg_small(num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None):
    """VGG-small: 6 conv layers (first one multiplication, five replaceable) and a classifier."""
    return VGGSmall(num_classes, kind, norm, eta, dtype, rng)
