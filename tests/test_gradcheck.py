"""Float64 central-difference checks of every layer's backward and of the losses.

For a random upstream gradient g, the scalar f(x, P) = sum(layer(x) * g) has df/dx equal to
what ``backward(g)`` returns and df/dP equal to each ``<param>_grad``. Each element is
perturbed by +-h in place (parameters are live arrays, so the layer sees the change).
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from nnbench import (
    BatchNorm,
    Conv2D,
    CrossEntropy,
    Dense,
    Dropout,
    Flatten,
    Pooling2D,
    RandomFlip,
    ReLU,
    Softmax,
    softmax_cross_entropy,
)
from nnbench.verify import assert_close, tolerance
from tests.engine_helpers import (
    built,
    case_id,
    randomize_parameters,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

STEP = 1e-6
TOL = tolerance(np.float64, "finite-difference")


def numeric_gradient(objective, array: np.ndarray) -> np.ndarray:
    """Central differences of ``objective()`` w.r.t. every element of ``array`` (in place)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + STEP
        plus = objective()
        array[index] = original - STEP
        minus = objective()
        array[index] = original
        grad[index] = (plus - minus) / (2 * STEP)
    return grad


def away_from_zero(rng, shape) -> np.ndarray:
    """Normal values pushed at least 0.1 from 0 (kinks of ReLU stay out of reach of +-h)."""
    x = rng.standard_normal(shape)
    return x + np.where(x >= 0, 0.1, -0.1)


def check_gradients(layer, x: np.ndarray, rng) -> None:
    grad_outputs = rng.standard_normal(layer.forward(x).shape)

    def objective() -> float:
        return float(np.sum(layer.forward(x) * grad_outputs))

    layer.forward(x)
    analytic = {"grad_inputs": layer.backward(grad_outputs)}
    for name in layer.parameter_names:
        analytic[f"{name}_grad"] = getattr(layer, f"{name}_grad").copy()

    assert_close("grad_inputs", analytic["grad_inputs"], numeric_gradient(objective, x), tol=TOL)
    for name in layer.parameter_names:
        numeric = numeric_gradient(objective, getattr(layer, name))
        assert_close(f"{name}_grad", analytic[f"{name}_grad"], numeric, tol=TOL)


class ConstantUniform(np.random.Generator):
    """A generator whose ``uniform`` returns ``value`` at every call: a layer given it as its
    ``rng`` keeps one mask through the many forwards of a finite-difference check."""

    def __init__(self, value: np.ndarray):
        super().__init__(np.random.PCG64(0))
        self.value = value

    def uniform(self, low=0.0, high=1.0, size=None):
        assert size is not None and np.shape(self.value) == tuple(np.atleast_1d(size))
        return self.value


# (id, layer factory, input shape, needs random parameters)
CASES = [
    ("dense-u2", lambda: Dense(2, input_shape=(4,)), (3, 4)),
    ("dense-u3", lambda: Dense(3, input_shape=(1,)), (1, 1)),
    ("relu", lambda: ReLU(input_shape=(2, 3)), (2, 2, 3)),
    ("softmax", lambda: Softmax(input_shape=(4,)), (3, 4)),
    ("pooling2d-max2", lambda: Pooling2D(2, "max", input_shape=(2, 4, 4)), (2, 2, 4, 4)),
    ("pooling2d-avg3", lambda: Pooling2D(3, "avg", input_shape=(2, 6, 3)), (1, 2, 6, 3)),
    ("batchnorm-train", lambda: BatchNorm(input_shape=(2, 3, 3)), (3, 2, 3, 3)),
    ("flatten", lambda: Flatten(input_shape=(2, 3)), (2, 2, 3)),
]

CONV_CASES = [((2, 2, 5, 4), 3, 3), ((1, 1, 4, 4), 2, 5)]


@pytest.mark.parametrize(
    "make, shape", [pytest.param(m, s, id=case_id(i, np.float64, s)) for i, m, s in CASES]
)
def test_layer_gradients(make, shape, rng):
    layer = built(make(), np.float64)
    randomize_parameters(layer, rng)
    check_gradients(layer, away_from_zero(rng, shape), rng)


@pytest.mark.parametrize(
    "backend, shape, c, k",
    [
        pytest.param(b, s, c, k, id=case_id(f"conv2d-{b}", np.float64, s, f"c{c}k{k}"))
        for b in kernels.available()
        for s, c, k in CONV_CASES
    ],
)
def test_conv2d_gradients(backend, shape, c, k, rng):
    reason = kernels.get(backend).supports(shape, (c, shape[1], k, k), (k - 1) // 2, np.float64)
    if reason:
        pytest.skip(reason)
    layer = built(Conv2D(c, k, input_shape=shape[1:], kernel=backend), np.float64)
    randomize_parameters(layer, rng)
    check_gradients(layer, rng.standard_normal(shape), rng)


def test_batchnorm_inference_gradients(rng):
    layer = built(BatchNorm(input_shape=(2, 2, 3)), np.float64)
    randomize_parameters(layer, rng)
    layer.running_mean[...] = rng.standard_normal(2)
    layer.running_var[...] = rng.uniform(0.5, 2, 2)
    layer.is_training = False
    check_gradients(layer, rng.standard_normal((3, 2, 2, 3)), rng)


def test_dropout_gradients(rng):
    shape = (3, 5)
    fixed = ConstantUniform(rng.uniform(size=shape))
    layer = built(Dropout(0.4, input_shape=(5,), rng=fixed), np.float64)
    check_gradients(layer, rng.standard_normal(shape), rng)


def test_random_flip_gradients(rng):
    fixed = ConstantUniform(np.array([0.1, 0.9, 0.3]))
    layer = built(RandomFlip(input_shape=(2, 2, 3), rng=fixed), np.float64)
    check_gradients(layer, rng.standard_normal((3, 2, 2, 3)), rng)


def test_cross_entropy_gradient(rng):
    y_gt = np.eye(4)[rng.integers(0, 4, 3)]
    y_pred = rng.uniform(0.05, 1, (3, 4))
    loss = CrossEntropy()
    numeric = numeric_gradient(lambda: float(loss.value(y_gt, y_pred)[0]), y_pred)
    assert_close("grad_y_pred", loss.gradient(y_gt, y_pred), numeric, tol=TOL)


def test_fused_softmax_cross_entropy_gradient(rng):
    y_gt = np.eye(5)[rng.integers(0, 5, 4)]
    logits = rng.standard_normal((4, 5)) * 3
    _, _, grad = softmax_cross_entropy(y_gt, logits)
    numeric = numeric_gradient(lambda: float(softmax_cross_entropy(y_gt, logits)[0][0]), logits)
    assert_close("grad_logits", grad, numeric, tol=TOL)
