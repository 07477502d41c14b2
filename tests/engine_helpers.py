"""Helpers shared by the engine tests: building layers, readable case ids, and the one check
that compares a layer's forward and every gradient with the torch reference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import reference as ref
from nnbench.verify import assert_close

DTYPES = (np.float32, np.float64)


def case_id(kind: str, dtype, shape, extra: str = "") -> str:
    """Ids such as ``conv2d-float32-k3[2,3,9,10]``."""
    middle = f"-{extra}" if extra else ""
    return f"{kind}-{np.dtype(dtype).name}{middle}[{','.join(map(str, shape))}]"


def grid(kind: str, cases: list[tuple], shape_of: Callable, extra_of: Callable) -> list:
    """``pytest.param(dtype, *case)`` for every case x dtype, with readable ids."""
    return [
        pytest.param(dtype, *case, id=case_id(kind, dtype, shape_of(case), extra_of(case)))
        for case in cases
        for dtype in DTYPES
    ]


def built(layer, dtype, optimizer=None):
    """``layer`` built standalone (its constructor gave the input shape) in ``dtype``."""
    layer.build(optimizer, dtype=dtype)
    return layer


def normal(rng: np.random.Generator, shape, dtype, scale: float = 1.0) -> np.ndarray:
    return (scale * rng.standard_normal(shape)).astype(dtype)


def randomize_parameters(layer, rng: np.random.Generator) -> None:
    """Overwrite every parameter in place with N(0, 1) values (never rely on the init)."""
    for name in layer.parameter_names:
        parameter = getattr(layer, name)
        parameter[...] = rng.standard_normal(parameter.shape)


def check_against_reference(
    layer,
    inputs: np.ndarray,
    reference_forward: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
    rng: np.random.Generator,
    *,
    backend: str | None = None,
    reductions: dict[str, int] | None = None,
) -> np.ndarray:
    """Forward, input gradient and every parameter gradient of ``layer`` at ``inputs`` against
    torch autograd of ``reference_forward(x, params)`` in float64 from the same values.

    The upstream gradient is random, so every output element matters. ``reductions`` gives
    the reduction length K per compared tensor (``forward``, ``grad_inputs``,
    ``<param>_grad``) for the tolerance table. Returns the layer's forward output.
    """
    dtype = layer.dtype
    params_t = {
        name: ref.tensor(getattr(layer, name), requires_grad=True) for name in layer.parameter_names
    }
    x_t = ref.tensor(inputs, requires_grad=True)
    outputs = layer.forward(inputs)
    grad_outputs = normal(rng, outputs.shape, dtype)
    grad_inputs = layer.backward(grad_outputs)

    y_t = reference_forward(x_t, params_t)
    (y_t * ref.tensor(grad_outputs)).sum().backward()

    red = reductions or {}
    kw = {"dtype": dtype, "backend": backend}
    assert_close("forward", outputs, y_t.detach().numpy(), reduction=red.get("forward", 1), **kw)
    assert_close(
        "grad_inputs", grad_inputs, x_t.grad.numpy(), reduction=red.get("grad_inputs", 1), **kw
    )
    for name, param_t in params_t.items():
        key = f"{name}_grad"
        assert_close(
            key, getattr(layer, key), param_t.grad.numpy(), reduction=red.get(key, 1), **kw
        )
    return outputs


def fixed_uniform(monkeypatch, values: list[np.ndarray]) -> list[tuple]:
    """Make ``np.random.uniform`` return ``values`` in turn (shape-checked); returns the log of
    the ``size`` arguments it was called with. This is how tests inject Dropout masks and
    RandomFlip choices without touching the engine."""
    calls: list[tuple] = []
    queue = list(values)

    def uniform(low=0.0, high=1.0, size=None):
        calls.append(tuple(np.atleast_1d(size)) if size is not None else ())
        value = queue.pop(0)
        assert value.shape == calls[-1], f"injected {value.shape} for size={size}"
        return value

    monkeypatch.setattr(np.random, "uniform", uniform)
    return calls
