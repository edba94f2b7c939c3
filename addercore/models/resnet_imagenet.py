"""ResNet-18 and ResNet-50 for ImageNet, adder or CNN, as in the authors' code.

``conv1`` 7×7/2 multiplication conv → ``bn1`` → ReLU → ``maxpool`` 3×3/2 → ``layer1..4``
(adder/conv blocks) → ``avgpool`` adaptive average to 1×1 → ``fc`` 1×1 multiplication conv
512·expansion→classes with a bias → ``bn2`` → flatten: the authors' resnet50.py
(github.com/huawei-noah/AdderNet: ``nn.AdaptiveAvgPool2d((1, 1))``,
``fc = nn.Conv2d(512 * block.expansion, num_classes, 1)`` (PyTorch's default ``bias=True``),
``bn2 = nn.BatchNorm2d(num_classes)``), so its state dict (``fc.weight`` (C, 2048, 1, 1),
``fc.bias``, ``bn2.*``) loads strictly. Any input of at least :data:`MIN_INPUT_SIZE` pixels a
side gives (N, num_classes) logits (224×224 in the paper). Definitions and forward only (no
ImageNet training in addercore); :func:`addercore.profile.count_ops` reproduces the paper's
operation counts with them.
"""
import numpy as np

from .. import nn
from ._common import MaxPool2d, body_conv, check_common
from .resnet_cifar import BasicBlock

__all__ = ["Bottleneck", "ResNetImageNet", "resnet18", "resnet50", "MIN_INPUT_SIZE"]

#: The network's total stride (conv1 2 × maxpool 2 × layers 2-4 2·2·2): the smallest input
#: side whose layer-4 map (1×1) still comes from image pixels rather than padding alone.
MIN_INPUT_SIZE = 32

_WIDTHS = (64, 128, 256, 512)


def _four_positive_ints(value, name):
    if (not isinstance(value, (tuple, list)) or len(value) != 4
            or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                   for n in value)):
        raise ValueError(f"{name} must be 4 positive ints, got {value!r}")
    return tuple(int(n) for n in value)


class Bottleneck(nn.Module):
    """conv1 1×1 → bn1 → ReLU → conv2 3×3 (stride) → bn2 → ReLU → conv3 1×1 (×4) → bn3
    → + shortcut → ReLU."""

    expansion = 4

    def __init__(self, cfg, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        dt = cfg["dtype"]
        self.conv1 = body_conv(cfg, inplanes, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes, dtype=dt)
        self.conv2 = body_conv(cfg, planes, planes, 3, stride=stride, padding=1)
        self.bn2 = nn.BatchNorm2d(planes, dtype=dt)
        self.conv3 = body_conv(cfg, planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4, dtype=dt)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride
        self.recompute = cfg.get("recompute", True)

    def forward(self, x):
        # fused BatchNorm → ReLU and BatchNorm → + shortcut → ReLU (see BasicBlock); with
        # recompute, each bn → ReLU output is released once the next conv has consumed it and
        # recomputed from that bn's input when the conv's backward reads it (the graph keeps 4
        # activations per block, not 6)
        h1 = self.bn1(self.conv1(x), relu=True)
        y2 = self.conv2(h1)
        if self.recompute:
            h1.release_data()
        h2 = self.bn2(y2, relu=True)
        out = self.conv3(h2)
        if self.recompute:
            h2.release_data()
        residual = x if self.downsample is None else self.downsample(x)
        return self.bn3(out, residual=residual, relu=True)


class ResNetImageNet(nn.Module):
    """ImageNet ResNet with ``block`` (BasicBlock or Bottleneck) and ``layers`` blocks/stage.

    ``widths``: channels of the four stages (and of conv1: the first), (64, 128, 256, 512) in
    the paper; narrower ones give the same topology and state-dict names (for quick tests).
    """

    def __init__(self, block, layers, num_classes=1000, kind="adder", norm="l1", eta=0.2,
                 dtype=np.float32, rng=None, recompute=True, widths=_WIDTHS):
        super().__init__()
        dt = check_common(num_classes, kind, norm, eta, dtype)
        w1, w2, w3, w4 = self.widths = _four_positive_ints(widths, "widths")
        self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
        cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dt, recompute=bool(recompute))
        self.inplanes = w1
        self.conv1 = nn.Conv2d(3, w1, 7, stride=2, padding=3, bias=False, rng=rng, dtype=dt)
        self.bn1 = nn.BatchNorm2d(w1, dtype=dt)
        self.relu = nn.ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(cfg, block, w1, layers[0])
        self.layer2 = self._make_layer(cfg, block, w2, layers[1], stride=2)
        self.layer3 = self._make_layer(cfg, block, w3, layers[2], stride=2)
        self.layer4 = self._make_layer(cfg, block, w4, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(w4 * block.expansion, num_classes, 1, bias=True, rng=rng, dtype=dt)
        self.bn2 = nn.BatchNorm2d(num_classes, dtype=dt)
        self.flatten = nn.Flatten()

    def _make_layer(self, cfg, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                body_conv(cfg, self.inplanes, planes * block.expansion, 1, stride=stride),
                nn.BatchNorm2d(planes * block.expansion, dtype=cfg["dtype"]),
            )
        out = [block(cfg, self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        out += [block(cfg, self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x):
        """x: (N, 3, H, W), H and W >= :data:`MIN_INPUT_SIZE` (224 in the paper) -> logits
        (N, num_classes). ValueError for a smaller image."""
        shape = np.shape(getattr(x, "data", x))
        if len(shape) == 4 and min(shape[2:]) < MIN_INPUT_SIZE:
            raise ValueError(f"{type(self).__name__}: input height and width must be at least "
                             f"{MIN_INPUT_SIZE} (the network's total stride), got shape {shape}")
        x = self.maxpool(self.bn1(self.conv1(x), relu=True))  # fused BatchNorm → ReLU
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.bn2(self.fc(self.avgpool(x))))

    def extra_repr(self):
        widths = "" if self.widths == _WIDTHS else f", widths={self.widths}"
        return (f"kind={self.kind!r}, norm={self.norm!r}, num_classes={self.num_classes}"
                f"{widths}")


def resnet18(num_classes=1000, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True, widths=_WIDTHS):
    """ResNet-18 (BasicBlocks 2-2-2-2); supplement Table 1's network."""
    return ResNetImageNet(BasicBlock, (2, 2, 2, 2), num_classes, kind, norm, eta, dtype, rng,
                          recompute, widths)


def resnet50(num_classes=1000, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True, widths=_WIDTHS):
    """ResNet-50 (Bottlenecks 3-4-6-3), the authors' resnet50.py."""
    return ResNetImageNet(Bottleneck, (3, 4, 6, 3), num_classes, kind, norm, eta, dtype, rng,
                          recompute, widths)
