"""Argument checks shared by layers, losses, optimizers and the model.

Each helper raises ``TypeError`` (wrong kind or dtype) or ``ValueError`` (wrong value or shape)
with a message that names the argument and says what was expected, so the front door of every
public call reads the same.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

import kernels as conv_kernels

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CallOrderError(RuntimeError, ValueError):
    """A method was called in the wrong order (``backward`` before ``forward``, say).

    It is a ``RuntimeError`` by nature and also a ``ValueError``, so callers that treat every
    bad call to the engine as a ``ValueError``/``TypeError`` catch it too.
    """


def float_dtype(dtype, name: str = "dtype") -> np.dtype:
    """``dtype`` as a numpy dtype; only float32 and float64 are accepted."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from exc
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {resolved}")
    return resolved


def optimizer(value, name: str):
    """``value`` must have a callable ``get_parameter_updater(parameter_shape)`` (duck typing:
    an nnbench ``Optimizer`` or any object shaped like one)."""
    if not callable(getattr(value, "get_parameter_updater", None)):
        raise TypeError(
            f"{name} must have a callable get_parameter_updater(parameter_shape) (an nnbench "
            f"Optimizer such as SGD, or an object like one), got {type(value).__name__}"
        )
    return value


def positive_int(value, name: str) -> int:
    """``value`` as an int >= 1 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def real_in_range(
    value,
    name: str,
    low: float,
    high: float,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
) -> float:
    """``value`` as a finite float in the interval low..high (ends as flagged)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    above = value >= low if low_inclusive else value > low
    below = value <= high if high_inclusive else value < high
    if not (above and below):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {value}")
    return value


def shape_tuple(shape, name: str) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints."""
    if isinstance(shape, (Integral, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        items = tuple(shape)
    except TypeError as exc:
        raise TypeError(f"{name} must be a tuple of positive ints, got {shape!r}") from exc
    if not items:
        raise ValueError(f"{name} must have at least one axis, got {items}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (Integral, np.integer)) or item < 1:
            raise ValueError(f"{name} must be a tuple of positive ints, got {items!r}")
    return tuple(int(i) for i in items)


def float_array(array, name: str, dtype: np.dtype) -> np.ndarray:
    """``array`` must be a numpy array of exactly ``dtype`` (no silent casts)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of {dtype}, got {type(array).__name__}")
    if array.dtype != dtype:
        raise TypeError(
            f"{name} must have dtype {dtype} (the model's dtype), got {array.dtype}; "
            f"cast it with {name}.astype(np.{dtype})"
        )
    return array


def batch_shape(array: np.ndarray, name: str, sample_shape: tuple[int, ...]) -> None:
    """``array`` must be (n, *sample_shape) with n >= 1."""
    expected = ("n", *sample_shape)
    if array.ndim != len(expected):
        raise ValueError(
            f"{name} must have {len(expected)} dimensions with shape "
            f"({', '.join(map(str, expected))}), got {array.ndim} with shape {array.shape}"
        )
    if array.shape[1:] != tuple(sample_shape):
        raise ValueError(
            f"{name} must have shape ({', '.join(map(str, expected))}), got {array.shape}"
        )
    if array.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one sample, got shape {array.shape}")


def finite(array: np.ndarray, name: str) -> None:
    """``array`` must hold no NaN or infinity."""
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{name} must be finite, found {bad} NaN or infinite values")


def random_source(value, name: str = "rng"):
    """``value`` if it can draw random numbers like numpy's global generator (a
    ``numpy.random.Generator`` or ``RandomState``); None stays None (the global one)."""
    if value is None or isinstance(value, (np.random.Generator, np.random.RandomState)):
        return value
    raise TypeError(
        f"{name} must be a numpy.random.Generator (or RandomState), or None for numpy's "
        f"global generator, got {type(value).__name__}"
    )


def backend(name, argument: str):
    """The convolution backend ``name`` (None: ``$NNBENCH_KERNEL``, then the default)."""
    try:
        return conv_kernels.resolve(name)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"{argument}: {exc}") from None
