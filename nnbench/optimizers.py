"""Stochastic gradient descent with and without momentum (assignment section 1.4).

An optimizer hands out one updater per parameter, given the parameter's shape as the assignment
specifies: ``get_parameter_updater(parameter_shape)``. ``lr`` is an ordinary attribute read at
every update, so a learning-rate schedule changes it between steps. Updaters return the new value
and leave their arguments alone; ``Layer.update_parameters`` copies the result into the live
array.
"""

from __future__ import annotations

import math

import numpy as np

from nnbench import _checks
from nnbench.base import Optimizer

__all__ = ["SGD", "SGDMomentum"]


class _LearningRate:
    """``lr`` as a validated attribute: a finite float >= 0."""

    def __set_name__(self, owner, name):
        self.attribute = f"_{name}"

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj, self.attribute)

    def __set__(self, obj, value):
        setattr(obj, self.attribute, _checks.real_in_range(value, "lr", 0.0, math.inf))


class SGD(Optimizer):
    """P <- P - lr * dL/dP."""

    lr = _LearningRate()

    def __init__(self, lr: float):
        self.lr = lr

    def get_parameter_updater(self, parameter_shape: tuple[int, ...]):
        _checks.shape_tuple(parameter_shape, "parameter_shape")

        def updater(parameter, parameter_grad):
            return parameter - self.lr * parameter_grad

        return updater

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr})"


class MomentumUpdater:
    """The updater of one parameter: owns its inertia I of the parameter's shape, initially 0.

    Only the shape is known when the updater is made, so I starts as float64 zeros and takes
    the parameter's dtype at the first update, while it is still zero (so nothing is rounded).
    """

    def __init__(self, optimizer: SGDMomentum, parameter_shape: tuple[int, ...]):
        self.optimizer = optimizer
        self.inertia = np.zeros(_checks.shape_tuple(parameter_shape, "parameter_shape"))

    def __call__(self, parameter: np.ndarray, parameter_grad: np.ndarray) -> np.ndarray:
        opt = self.optimizer
        if self.inertia.dtype != parameter.dtype:
            self.inertia = self.inertia.astype(parameter.dtype)
        grad = parameter_grad
        if opt.weight_decay:
            grad = grad + opt.weight_decay * parameter
        # I <- beta * I + lr * g, in place on I with the same roundings as the formula.
        self.inertia *= opt.momentum
        self.inertia += opt.lr * grad
        return parameter - self.inertia


class SGDMomentum(Optimizer):
    """I <- momentum * I + lr * (g + weight_decay * P); P <- P - I.

    With ``weight_decay=0`` (the default) this is exactly the assignment's formula
    I <- beta I + alpha dL/dP. Weight decay, when used, applies to every parameter.
    """

    lr = _LearningRate()

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.lr = lr
        self.momentum = _checks.real_in_range(momentum, "momentum", 0.0, 1.0)
        self.weight_decay = _checks.real_in_range(weight_decay, "weight_decay", 0.0, math.inf)

    def get_parameter_updater(self, parameter_shape: tuple[int, ...]) -> MomentumUpdater:
        return MomentumUpdater(self, parameter_shape)

    def __repr__(self) -> str:
        return (
            f"SGDMomentum(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"
        )
