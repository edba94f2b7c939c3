"""Neural-network modules: ``Module`` with PyTorch-style state dicts, and the layers of
AdderNet and of the matching CNNs."""
from .layers import (AdaptiveAvgPool2d, Adder2d, AvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear,
                     MaxPool2d, ReLU, manual_seed)
from .module import Module, Parameter, Sequential
from .precise_bn import recalibrate_batchnorm

__all__ = ["Module", "Parameter", "Sequential", "Adder2d", "Conv2d", "BatchNorm2d", "ReLU",
           "AvgPool2d", "AdaptiveAvgPool2d", "MaxPool2d", "Linear", "Flatten", "manual_seed", "recalibrate_batchnorm"]
