"""Stochastic gradient descent with and without momentum (assignment section 1.4).

An optimizer hands out one updater per parameter. ``lr`` is an ordinary attribute read at every
update, so a learning-rate schedule changes it between steps. Updaters return the new value and
leave their arguments alone; ``Layer.update_parameters`` copies the result into the live array.
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

    def get_parameter_updater(self, parameter: np.ndarray):
        def updater(parameter, parameter_grad):
            return parameter - self.lr * parameter_grad

        return updater

    def __repr__(self) -> str:
        return f"SGD(lr={self.lr})"


class MomentumUpdater:
    """The updater of one parameter: owns its inertia I (same shape and dtype), initially 0."""

    def __init__(self, optimizer: SGDMomentum, parameter: np.ndarray):
        self.optimizer = optimizer
        self.inertia = np.zeros_like(parameter)

    def __call__(self, parameter: np.ndarray, parameter_grad: np.ndarray) -> np.ndarray:
        opt = self.optimizer
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

    def get_parameter_updater(self, parameter: np.ndarray) -> MomentumUpdater:
        return MomentumUpdater(self, parameter)

    def __repr__(self) -> str:
        return (
            f"SGDMomentum(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"
        )
