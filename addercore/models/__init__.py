"""Model zoo of the AdderNet paper, adder or CNN (``kind``), ℓ1 or ℓ2 (``norm``).

CIFAR: :func:`resnet20`, :func:`resnet32`, :func:`resnet56` (the authors' definitions and
state-dict names), :func:`vgg_small`. MNIST: :func:`lenet5_bn`. ImageNet: :func:`resnet18`,
:func:`resnet50`. :func:`get_model` builds one by name.
"""
from ._common import MaxPool2d, max_pool2d
from .lenet import LeNet5BN, lenet5_bn
from .resnet_cifar import BasicBlock, ResNetCIFAR, resnet20, resnet32, resnet56
from .resnet_imagenet import Bottleneck, ResNetImageNet, resnet18, resnet50
from .vgg import VGGSmall, vgg_small

MODELS = {"resnet20": resnet20, "resnet32": resnet32, "resnet56": resnet56,
          "vgg_small": vgg_small, "lenet5_bn": lenet5_bn, "resnet18": resnet18,
          "resnet50": resnet50}


def get_model(name, **kwargs):
    """Build the model called ``name`` (a key of :data:`MODELS`) with ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "get_model", "resnet20", "resnet32", "resnet56", "vgg_small", "lenet5_bn",
           "resnet18", "resnet50", "ResNetCIFAR", "ResNetImageNet", "BasicBlock", "Bottleneck",
           "VGGSmall", "LeNet5BN", "MaxPool2d", "max_pool2d"]
