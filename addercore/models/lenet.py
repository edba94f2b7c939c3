"""LeNet-5-BN for MNIST (28×28), the paper's first experiment.

conv1 5×5 1→6 (pad 2) → BN → ReLU → MaxPool 2 → conv2 5×5 6→16 → BN → ReLU → MaxPool 2 →
fc1 (5×5 16→120, a convolution covering the whole map) → BN → ReLU → fc2 (1×1 120→84) → BN →
ReLU → fc3 (1×1 84→classes) → BN → flatten. For ``kind="adder"`` *every* layer is an adder
layer (the paper: "almost no multiplication"; ≈2×0.42M additions); for ``kind="cnn"`` they are
bias-free convolutions. Input (N, 1, 28, 28) -> logits (N, num_classes).
"""
import numpy as np

from .. import nn
from ._common import MaxPool2d, body_conv, check_common

__all__ = ["LeNet5BN", "lenet5_bn"]


class LeNet5BN(nn.Module):
    def __init__(self, num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32,
                 rng=None):
        super().__init__()
        dt = check_common(num_classes, kind, norm, eta, dtype)
        self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
        cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dt)
        self.conv1 = body_conv(cfg, 1, 6, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(6, dtype=dt)
        self.conv2 = body_conv(cfg, 6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16, dtype=dt)
        self.fc1 = body_conv(cfg, 16, 120, 5)
        self.bn3 = nn.BatchNorm2d(120, dtype=dt)
        self.fc2 = body_conv(cfg, 120, 84, 1)
        self.bn4 = nn.BatchNorm2d(84, dtype=dt)
        self.fc3 = body_conv(cfg, 84, num_classes, 1)
        self.bn5 = nn.BatchNorm2d(num_classes, dtype=dt)
        self.relu = nn.ReLU()
        self.pool = MaxPool2d(2)
        self.flatten = nn.Flatten()

    def forward(self, x):
        """x: (N, 1, 28, 28) -> logits (N, num_classes)."""
        # BatchNorm → ReLU pairs run fused (one graph node; no pre-ReLU activation kept)
        x = self.pool(self.bn1(self.conv1(x), relu=True))
        x = self.pool(self.bn2(self.conv2(x), relu=True))
        x = self.bn3(self.fc1(x), relu=True)
        x = self.bn4(self.fc2(x), relu=True)
        return self.flatten(self.bn5(self.fc3(x)))


def lenet5_bn(num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None):
    """LeNet-5 with BatchNorm after every layer (MNIST, 1×28×28 inputs)."""
    return LeNet5BN(num_classes, kind, norm, eta, dtype, rng)
