"""nnbench: a numpy neural-network engine (the assignment's layers, losses, optimizers and
model) whose convolutions run on interchangeable backends from the ``kernels`` package.

Quick use::

    import numpy as np
    from nnbench import Model, Dense, ReLU, Softmax, CrossEntropy, SGDMomentum

    model = Model(CrossEntropy(), SGDMomentum(lr=0.1, momentum=0.9))
    model.add(Dense(128, input_shape=(784,)))
    model.add(ReLU())
    model.add(Dense(10))
    model.add(Softmax())
    history = model.fit(x_train, y_train, batch_size=128, epochs=5)
"""

import kernels
from nnbench import auto
from nnbench._checks import CallOrderError
from nnbench.base import Layer, Loss, Optimizer
from nnbench.layers import (
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Pooling2D,
    RandomFlip,
    ReLU,
    Softmax,
)
from nnbench.losses import CategoricalCrossentropy, CrossEntropy, softmax_cross_entropy
from nnbench.model import History, Model, NonFiniteLossError
from nnbench.optimizers import SGD, SGDMomentum

__version__ = "0.1.0"

kernels.register(auto.BACKEND)  # backend="auto" (nnbench.auto): measured choice per call

__all__ = [
    "SGD",
    "BatchNorm",
    "CallOrderError",
    "CategoricalCrossentropy",
    "Conv2D",
    "CrossEntropy",
    "Dense",
    "Dropout",
    "Flatten",
    "History",
    "Layer",
    "Loss",
    "Model",
    "NonFiniteLossError",
    "Optimizer",
    "Pooling2D",
    "RandomFlip",
    "ReLU",
    "SGDMomentum",
    "Softmax",
    "__version__",
    "softmax_cross_entropy",
]
