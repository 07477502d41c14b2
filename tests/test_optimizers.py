"""SGD and SGDMomentum (assignment section 1.4): exact multi-step sequences.

Values are dyadic (sums of powers of two), so every step is exact in float32 and float64 and
the expectations, worked out by hand from the formulas, are compared for equality.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnbench import SGD, Dense, SGDMomentum
from tests.engine_helpers import DTYPES, built

DTYPE_PARAMS = [pytest.param(d, id=np.dtype(d).name) for d in DTYPES]


def run(updater, parameter, grads, dtype):
    """Apply ``updater`` the way a layer does (in place); return the value after each step."""
    parameter = np.array(parameter, dtype=dtype)
    values = []
    for grad in grads:
        parameter[...] = updater(parameter, np.array(grad, dtype=dtype))
        values.append(parameter.tolist())
    return values


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sgd_sequence(dtype):
    # P <- P - 0.5 g
    grads = [[0.5, 1.0], [0.25, -0.5], [1.0, 1.0]]
    optimizer = SGD(lr=0.5)
    values = run(optimizer.get_parameter_updater((2,)), [1.0, -2.0], grads, dtype)
    assert values == [[0.75, -2.5], [0.625, -2.25], [0.125, -2.75]]


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sgd_momentum_sequence(dtype):
    # I <- 0.5 I + 0.5 g; P <- P - I, from I = 0, P = [1, 1]:
    # g1 = [1, -2]:    I = [0.5, -1]               P = [0.5, 2]
    # g2 = [0.5, 0.5]: I = [0.25 + 0.25, -0.5 + 0.25] = [0.5, -0.25]    P = [0, 2.25]
    # g3 = [-1, 0]:    I = [0.25 - 0.5, -0.125 + 0] = [-0.25, -0.125]   P = [0.25, 2.375]
    optimizer = SGDMomentum(lr=0.5, momentum=0.5)
    parameter = np.ones(2, dtype=dtype)
    updater = optimizer.get_parameter_updater(parameter.shape)
    values = run(updater, parameter, [[1.0, -2.0], [0.5, 0.5], [-1.0, 0.0]], dtype)
    assert values == [[0.5, 2.0], [0.0, 2.25], [0.25, 2.375]]
    assert updater.inertia.tolist() == [-0.25, -0.125] and updater.inertia.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_sgd_momentum_weight_decay_sequence(dtype):
    # I <- 0.5 I + 0.5 (g + 0.5 P); P <- P - I, from P = 2:
    # g = 1: I = 0.5 (1 + 1) = 1                    P = 1
    # g = 1: I = 0.5 + 0.5 (1 + 0.5) = 1.25         P = -0.25
    # g = 0: I = 0.625 + 0.5 (0 - 0.125) = 0.5625   P = -0.8125
    optimizer = SGDMomentum(lr=0.5, momentum=0.5, weight_decay=0.5)
    updater = optimizer.get_parameter_updater((1,))
    assert run(updater, [2.0], [[1.0], [1.0], [0.0]], dtype) == [[1.0], [-0.25], [-0.8125]]


def test_momentum_zero_is_exactly_sgd(rng):
    parameter = rng.standard_normal(50).astype(np.float32)
    grads = [rng.standard_normal(50).astype(np.float32) for _ in range(4)]
    plain = run(SGD(0.037).get_parameter_updater((50,)), parameter, grads, np.float32)
    heavy = SGDMomentum(0.037, momentum=0.0).get_parameter_updater((50,))
    assert run(heavy, parameter, grads, np.float32) == plain


def test_momentum_matches_the_formula_on_random_values(rng):
    """Bit for bit what beta * I + lr * g, P - I computes in float32."""
    parameter = rng.standard_normal(30).astype(np.float32)
    updater = SGDMomentum(0.01, momentum=0.9).get_parameter_updater((30,))
    expected_p, inertia = parameter.copy(), np.zeros(30, np.float32)
    current = parameter.copy()
    for _ in range(5):
        grad = rng.standard_normal(30).astype(np.float32)
        inertia = np.float32(0.9) * inertia + np.float32(0.01) * grad
        expected_p = expected_p - inertia
        current[...] = updater(current, grad)
        np.testing.assert_array_equal(current, expected_p)


def test_lr_is_read_at_every_update():
    optimizer = SGD(lr=1.0)
    updater = optimizer.get_parameter_updater((1,))
    first = updater(np.array([1.0]), np.array([1.0]))
    optimizer.lr = 0.25
    second = updater(np.array([1.0]), np.array([1.0]))
    assert first.tolist() == [0.0] and second.tolist() == [0.75]


def test_updaters_do_not_modify_their_arguments_and_keep_dtype():
    for optimizer in (SGD(0.5), SGDMomentum(0.5, momentum=0.5, weight_decay=0.1)):
        parameter = np.array([1.0, 2.0], dtype=np.float32)
        grad = np.array([1.0, 1.0], dtype=np.float32)
        new = optimizer.get_parameter_updater(parameter.shape)(parameter, grad)
        assert parameter.tolist() == [1.0, 2.0] and grad.tolist() == [1.0, 1.0]
        assert new.dtype == np.float32


def test_each_parameter_has_its_own_inertia(rng):
    optimizer = SGDMomentum(0.5, momentum=0.5)
    layer = built(Dense(2, input_shape=(3,)), np.float64, optimizer)
    weights_updater, biases_updater = layer._updaters["weights"], layer._updaters["biases"]
    assert weights_updater.inertia.shape == (2, 3) and biases_updater.inertia.shape == (2,)
    layer.weights_grad[...] = 1.0
    layer.biases_grad[...] = 2.0
    layer.update_parameters()
    assert weights_updater.inertia.tolist() == [[0.5] * 3] * 2
    assert biases_updater.inertia.tolist() == [1.0, 1.0]


OPTIMIZERS = {"sgd": lambda: SGD(0.5), "momentum": lambda: SGDMomentum(0.5, momentum=0.5)}


@pytest.mark.parametrize("shape", [(32, 32), (3,), (4, 2, 3, 3)], ids=lambda s: str(list(s)))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
def test_updater_is_made_from_the_parameter_shape(dtype, name, shape):
    """The assignment's API: ``get_parameter_updater(parameter_shape)``; two steps of
    P <- P - 0.5 g with g = 1 from P = 0 (momentum 0.5: I = 0.5, then 0.75)."""
    updater = OPTIMIZERS[name]().get_parameter_updater(shape)
    parameter = np.zeros(shape, dtype)
    expected = {"sgd": [-0.5, -1.0], "momentum": [-0.5, -1.25]}[name]
    for value in expected:
        parameter[...] = updater(parameter, np.ones(shape, dtype))
        assert parameter.dtype == dtype and np.all(parameter == value)
    if name == "momentum":
        assert updater.inertia.shape == shape and updater.inertia.dtype == dtype
