"""The model and the data a :class:`~addercore.train.config.TrainConfig` names."""
import numpy as np

from .. import nn
from ..data import load_cifar10, load_cifar100
from ..models import MODELS

__all__ = ["build_model", "load_data"]


def build_model(config):
    """The model of ``config`` (fresh initialisation seeded by ``config.seed``)."""
    num_classes = 10 if config.dataset == "cifar10" else 100
    rng = np.random.default_rng(config.seed)
    model = MODELS[config.model](num_classes=num_classes, kind=config.kind, norm=config.norm,
                                 eta=config.eta, dtype=np.dtype(config.dtype), rng=rng)
    if config.filter_grad != "full":  # the supplement's sign-gradient ablation (Table 1)
        for m in model.modules():
            if isinstance(m, nn.Adder2d):
                m.filter_grad = config.filter_grad
    return model


def load_data(config, with_train=True):
    """``((train_x, train_y), (test_x, test_y))`` uint8 images / int64 labels, subsets applied
    (the first ``train_subset`` / ``test_subset`` images). ``with_train=False`` skips reading
    the training set (returns None in its place)."""
    loader = load_cifar10 if config.dataset == "cifar10" else load_cifar100
    test_x, test_y = loader(config.data_dir, train=False, download=config.download)
    if config.test_subset is not None:
        test_x, test_y = test_x[:config.test_subset], test_y[:config.test_subset]
    if not with_train:
        return None, (test_x, test_y)
    train_x, train_y = loader(config.data_dir, train=True, download=config.download)
    if config.train_subset is not None:
        train_x, train_y = train_x[:config.train_subset], train_y[:config.train_subset]
    return (train_x, train_y), (test_x, test_y)
