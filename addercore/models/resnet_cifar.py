"""ResNet-20/32/56 for CIFAR exactly as the AdderNet authors define them (``docs/method.md`` §7.1).

``conv1`` 3×3 multiplication conv 3→16 (no bias) → ``bn1`` → ReLU → ``layer1..3`` (n
BasicBlocks each, widths 16/32/64 (``widths=``), stride 2 at the first block of layers 2 and 3) → AvgPool 8×8
→ ``fc`` 1×1 multiplication conv 64→classes (no bias) → ``bn2`` (BatchNorm on the logits) →
flatten. Inside the blocks every 3×3 (and the 1×1 shortcut) is an adder layer for
``kind="adder"`` (param ``adder``) or a bias-free Conv2d for ``kind="cnn"`` (param ``weight``).
State-dict names are the authors', so their checkpoint (``module.`` stripped) loads strictly.

Input: (N, 3, 32, 32) float32/float64; output: logits (N, num_classes).

``recompute=True`` (default) trades one elementwise pass per block for memory in training: the
graph keeps 3 activations per block instead of 4 (see :class:`BasicBlock`); values and
gradients are bit-identical either way.
"""
import numpy as np

from .. import nn
from ._common import body_conv, check_common

__all__ = ["BasicBlock", "ResNetCIFAR", "resnet20", "resnet32", "resnet56"]


class BasicBlock(nn.Module):
    """conv1 (3×3, stride) → bn1 → ReLU → conv2 (3×3) → bn2 → + shortcut → ReLU.

    The shortcut is ``downsample`` = Sequential(1×1 adder/conv with stride, BatchNorm) when the
    shape changes, the identity otherwise. "bn → ReLU" and "bn → + shortcut → ReLU" run as
    fused ops (``BatchNorm2d(..., relu=True)``); ``relu`` is kept as a (stateless) child module
    for the module tree only.

    ``recompute`` (``cfg["recompute"]``, default True; a plain attribute, may be changed): in
    training, the bn1 → ReLU output h is released once conv2 has consumed it, and recomputed
    (bit-identical, one elementwise pass over conv1's output, which the graph keeps anyway) when
    conv2's backward reads it. The graph then keeps 3 activations per block, not 4.
    """

    expansion = 1

    def __init__(self, cfg, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        dt = cfg["dtype"]
        self.conv1 = body_conv(cfg, inplanes, planes, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(planes, dtype=dt)
        self.relu = nn.ReLU()
        self.conv2 = body_conv(cfg, planes, planes, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(planes, dtype=dt)
        self.downsample = downsample
        self.stride = stride
        self.recompute = cfg.get("recompute", True)

    def forward(self, x):
        # BatchNorm → ReLU and BatchNorm → + shortcut → ReLU are fused ops: the graph keeps 4
        # activations per block (conv1 out, bn1+relu out, conv2 out, block out), not 7; 3 with
        # recompute.
        h = self.bn1(self.conv1(x), relu=True)
        out = self.conv2(h)
        if self.recompute:
            # h is needed again only in backward (conv2's input, bn1-ReLU's mask): recomputed
            # from conv1's output when conv2's backward reads it (no-op without a graph)
            h.release_data()
        residual = x if self.downsample is None else self.downsample(x)
        return self.bn2(out, residual=residual, relu=True)


def _three_positive_ints(value, name):
    if (not isinstance(value, (tuple, list)) or len(value) != 3
            or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1
                   for n in value)):
        raise ValueError(f"{name} must be 3 positive ints, got {value!r}")
    return tuple(int(n) for n in value)


class ResNetCIFAR(nn.Module):
    """The authors' CIFAR ResNet; ``layers`` = blocks per stage, e.g. (3, 3, 3) for ResNet-20.

    ``widths``: channels of the three stages, (16, 32, 64) in the paper; other widths give the
    same topology, state-dict names and initialisation order (golden files use narrow ones).
    """

    def __init__(self, layers, num_classes=10, kind="adder", norm="l1", eta=0.2,
                 dtype=np.float32, rng=None, recompute=True, widths=(16, 32, 64)):
        super().__init__()
        dt = check_common(num_classes, kind, norm, eta, dtype)
        layers = _three_positive_ints(layers, "layers")
        w1, w2, w3 = _three_positive_ints(widths, "widths")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
        self.kind, self.norm, self.num_classes = kind, norm, int(num_classes)
        cfg = dict(kind=kind, norm=norm, eta=eta, rng=rng, dtype=dt, recompute=bool(recompute))
        self.widths = (w1, w2, w3)
        self.inplanes = w1
        self.conv1 = nn.Conv2d(3, w1, 3, stride=1, padding=1, bias=False, rng=rng, dtype=dt)
        self.bn1 = nn.BatchNorm2d(w1, dtype=dt)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(cfg, w1, layers[0])
        self.layer2 = self._make_layer(cfg, w2, layers[1], stride=2)
        self.layer3 = self._make_layer(cfg, w3, layers[2], stride=2)
        self.avgpool = nn.AvgPool2d(8, stride=1)
        self.fc = nn.Conv2d(w3 * BasicBlock.expansion, num_classes, 1, bias=False, rng=rng,
                            dtype=dt)
        self.bn2 = nn.BatchNorm2d(num_classes, dtype=dt)
        self.flatten = nn.Flatten()

    def _make_layer(self, cfg, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                body_conv(cfg, self.inplanes, planes * BasicBlock.expansion, 1, stride=stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion, dtype=cfg["dtype"]),
            )
        blocks_ = [BasicBlock(cfg, self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        blocks_ += [BasicBlock(cfg, self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*blocks_)

    def forward(self, x):
        """x: (N, 3, 32, 32) -> logits (N, num_classes)."""
        x = self.bn1(self.conv1(x), relu=True)  # fused BatchNorm → ReLU
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.bn2(self.fc(self.avgpool(x)))
        return self.flatten(x)

    def extra_repr(self):
        widths = "" if self.widths == (16, 32, 64) else f", widths={self.widths}"
        return (f"kind={self.kind!r}, norm={self.norm!r}, num_classes={self.num_classes}"
                f"{widths}")


def resnet20(num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True):
    """ResNet-20 (3 blocks per stage, 0.27M parameters): the authors' CIFAR AdderNet."""
    return ResNetCIFAR((3, 3, 3), num_classes, kind, norm, eta, dtype, rng, recompute)


def resnet32(num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True):
    """ResNet-32 (5 blocks per stage)."""
    return ResNetCIFAR((5, 5, 5), num_classes, kind, norm, eta, dtype, rng, recompute)


def resnet56(num_classes=10, kind="adder", norm="l1", eta=0.2, dtype=np.float32, rng=None,
             recompute=True):
    """ResNet-56 (9 blocks per stage)."""
    return ResNetCIFAR((9, 9, 9), num_classes, kind, norm, eta, dtype, rng, recompute)
