"""ResNet-18 and ResNet-50 for ImageNet (224×224), adder or CNN, as in the authors' code.

``conv1`` 7×7/2 multiplication conv → ``bn1`` → ReLU → ``maxpool`` 3×3/2 → ``layer1..4``
(adder/conv blocks) → AvgPool 7×7 → ``fc`` 1×1 multiplication conv 512·expansion→classes (no
bias) → ``bn2`` → flatten. Definitions and forward only (no ImageNet training in addercore);
:func:`addercore.profile.count_ops` reproduces the paper's operation counts with them.
"""
import numpy as np

from .. import nn
from ._common import MaxPool2d, body_conv, check_common
from .resnet_cifar import BasicBlock

__all__ = ["Bottleneck", "ResNetImageNet", "resnet18", "resnet50"]


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
    """ImageNet ResNet with ``block`` (BasicBlock or Bottleneck) and ``layers`` blocks/stage."""

    def __init__(self, block, layers, num_classes=1000, kind="adder", norm="l1", eta=0.2,
                 dtype=np.float32, rng=None, recompute=True):
        super().__init__()
        dt = check_common(num_classes, kind, norm, eta, dtype)
        self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
        cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dt, recompute=bool(recompute))
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False, rng=rng, dtype=dt)
        self.bn1 = nn.BatchNorm2d(64, dtype=dt)
        self.relu = nn.ReLU()
        self.maxpool = MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(cfg, block, 64, layers[0])
        self.layer2 = self._make_layer(cfg, block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(cfg, block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(cfg, block, 512, layers[3], stride=2)
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Conv2d(512 * block.expansion, num_classes, 1, bias=False, rng=rng, dtype=dt)
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
        """x: (N, 3, 224, 224) -> logits (N, num_classes)."""
        x = self.maxpool(self.bn1(self.conv1(x), relu=True))  # fused BatchNorm → ReLU
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.flatten(self.bn2(self.fc(self.avgpool(x))))


def resnet18(num_classes=1000, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True):
    """ResNet-18 (BasicBlocks 2-2-2-2); supplement Table 1's network."""
    return ResNetImageNet(BasicBlock, (2, 2, 2, 2), num_classes, kind, norm, eta, dtype, rng,
                          recompute)


def resnet50(num_classes=1000, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True):
    """ResNet-50 (Bottlenecks 3-4-6-3)."""
    return ResNetImageNet(Bottleneck, (3, 4, 6, 3), num_classes, kind, norm, eta, dtype, rng,
                          recompute)
