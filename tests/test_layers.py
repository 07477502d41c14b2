"""Every layer against the torch reference: forward, input gradient and each parameter gradient,
on a grid of shapes, in float64 (tight) and float32 (the table in nnbench/verify/tolerances.py).

Conv2D runs on every backend in ``kernels.available()``: a new ``kernels/backend_*.py`` joins
this grid with no edit here; a backend whose ``supports`` declines a case is skipped with its
reason.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
import reference as ref
from nnbench import (
    SGD,
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
from nnbench.losses import EPS
from nnbench.verify import assert_close
from tests.engine_helpers import (
    DTYPES,
    built,
    case_id,
    check_against_reference,
    fixed_uniform,
    grid,
    normal,
    randomize_parameters,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

# --- Dense, ReLU, Softmax -------------------------------------------------------------------

DENSE_CASES = [(1, 1, 1), (4, 7, 3), (3, 5, 10), (2, 64, 4)]  # (n, d, units)


@pytest.mark.parametrize(
    "dtype, n, d, units", grid("dense", DENSE_CASES, lambda c: c[:2], lambda c: f"u{c[2]}")
)
def test_dense(dtype, n, d, units, rng):
    layer = built(Dense(units, input_shape=(d,)), dtype)
    randomize_parameters(layer, rng)
    check_against_reference(
        layer,
        normal(rng, (n, d), dtype),
        lambda x, p: ref.dense(x, p["weights"], p["biases"]),
        rng,
        reductions={"forward": d, "grad_inputs": units, "weights_grad": n, "biases_grad": n},
    )


RELU_SHAPES = [(2, 3, 4, 5), (1, 7), (5, 1)]


@pytest.mark.parametrize(
    "dtype, shape", grid("relu", [(s,) for s in RELU_SHAPES], lambda c: c[0], lambda c: "")
)
def test_relu(dtype, shape, rng):
    layer = built(ReLU(input_shape=shape[1:]), dtype)
    x = normal(rng, shape, dtype)
    x.flat[:: max(1, x.size // 3)] = 0  # exact zeros: the derivative there is 1
    check_against_reference(layer, x, lambda x, p: ref.relu(x), rng)


def test_relu_derivative_is_one_at_zero():
    layer = built(ReLU(input_shape=(3,)), np.float64)
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 5.0, 5.0]])), [[0.0, 5.0, 5.0]])


SOFTMAX_CASES = [((1, 3), 1.0), ((4, 10), 1.0), ((3, 7), 30.0), ((2, 1), 1.0)]


@pytest.mark.parametrize(
    "dtype, shape, scale",
    grid("softmax", SOFTMAX_CASES, lambda c: c[0], lambda c: f"scale{c[1]:g}"),
)
def test_softmax(dtype, shape, scale, rng):
    layer = built(Softmax(input_shape=shape[1:]), dtype)
    check_against_reference(
        layer,
        normal(rng, shape, dtype, scale),
        lambda x, p: ref.softmax(x),
        rng,
        reductions={"grad_inputs": shape[1]},
    )


def test_softmax_does_not_overflow():
    layer = built(Softmax(input_shape=(3,)), np.float32)
    probs = layer.forward(np.array([[1e4, 0.0, -1e4]], dtype=np.float32))
    np.testing.assert_array_equal(probs, [[1.0, 0.0, 0.0]])


# --- Conv2D on every backend ----------------------------------------------------------------

# (input shape (n, d, h, w), output channels c, kernel size k)
CONV_CASES = [
    ((2, 3, 9, 10), 4, 3),
    ((1, 1, 5, 5), 2, 1),
    ((2, 2, 7, 6), 3, 5),
    ((1, 3, 8, 8), 2, 7),
    ((3, 1, 4, 4), 1, 3),
    ((2, 4, 6, 6), 5, 3),
]

CONV_GRID = [
    pytest.param(
        backend, dtype, shape, c, k, id=case_id(f"conv2d-{backend}", dtype, shape, f"c{c}k{k}")
    )
    for backend in kernels.available()
    for shape, c, k in CONV_CASES
    for dtype in DTYPES
]


@pytest.mark.parametrize("backend, dtype, shape, c, k", CONV_GRID)
def test_conv2d(backend, dtype, shape, c, k, rng):
    n, d, h, w = shape
    reason = kernels.get(backend).supports(shape, (c, d, k, k), (k - 1) // 2, np.dtype(dtype))
    if reason:
        pytest.skip(reason)
    layer = built(Conv2D(c, k, input_shape=shape[1:], kernel=backend), dtype)
    assert layer.backend.name == backend
    randomize_parameters(layer, rng)
    check_against_reference(
        layer,
        normal(rng, shape, dtype),
        lambda x, p: ref.conv2d(x, p["kernels"], p["biases"], (k - 1) // 2),
        rng,
        backend=backend,
        reductions={
            "forward": d * k * k,
            "grad_inputs": c * k * k,
            "kernels_grad": n * h * w,
            "biases_grad": n * h * w,
        },
    )


def test_conv2d_is_true_convolution():
    """A 3x3 kernel whose only 1 is top-left gives y[t, s] = x[t + 1, s + 1] (section 3.2:
    y[t] = sum_u x[t - u] k[u], u = -1 there); cross-correlation would shift the other way."""
    layer = built(Conv2D(1, 3, input_shape=(1, 3, 3), kernel=kernels.available()[0]), np.float64)
    layer.kernels[...] = 0
    layer.kernels[0, 0, 0, 0] = 1
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    expected = [[4, 5, 0], [7, 8, 0], [0, 0, 0]]
    np.testing.assert_array_equal(layer.forward(x)[0, 0], expected)


def test_conv2d_initialisation_and_shapes():
    np.random.seed(1234)  # the engine draws He init from numpy's global generator
    layer = built(Conv2D(64, 3, input_shape=(32, 8, 8), kernel=kernels.available()[0]), np.float32)
    assert layer.kernels.shape == (64, 32, 3, 3) and layer.kernels.dtype == np.float32
    assert layer.output_shape == (64, 8, 8)
    np.testing.assert_allclose(layer.kernels.std(), np.sqrt(2 / (32 * 9)), rtol=0.05)
    assert abs(layer.kernels.mean()) < 0.01
    np.testing.assert_array_equal(layer.biases, 0)


# --- Pooling2D ------------------------------------------------------------------------------

POOL_CASES = [
    (shape, p, mode)
    for shape, p in [((2, 3, 4, 6), 2), ((1, 1, 6, 9), 3), ((2, 2, 8, 8), 4), ((1, 2, 2, 2), 2)]
    for mode in ("max", "avg")
]


@pytest.mark.parametrize(
    "dtype, shape, p, mode",
    grid("pooling2d", POOL_CASES, lambda c: c[0], lambda c: f"{c[2]}{c[1]}"),
)
def test_pooling2d(dtype, shape, p, mode, rng):
    layer = built(Pooling2D(p, mode, input_shape=shape[1:]), dtype)
    check_against_reference(
        layer,
        normal(rng, shape, dtype),
        lambda x, _: ref.pool2d(x, p, mode),
        rng,
        reductions={"forward": p * p},
    )


def test_max_pooling_routes_to_one_argmax_per_window_first_on_ties():
    layer = built(Pooling2D(2, "max", input_shape=(1, 2, 4)), np.float64)
    x = np.array([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.5, 2.0, 2.0]]]])
    np.testing.assert_array_equal(layer.forward(x), [[[[1.0, 2.0]]]])
    grad = layer.backward(np.array([[[[10.0, 20.0]]]]))
    np.testing.assert_array_equal(grad, [[[[10.0, 0.0, 0.0, 20.0], [0.0, 0.0, 0.0, 0.0]]]])


# --- BatchNorm ------------------------------------------------------------------------------

BN_SHAPES = [(4, 3, 5, 6), (2, 1, 3, 3), (1, 2, 4, 4), (8, 2, 1, 1)]


@pytest.mark.parametrize(
    "dtype, shape, training",
    grid(
        "batchnorm",
        [(s, t) for s in BN_SHAPES for t in (True, False)],
        lambda c: c[0],
        lambda c: "train" if c[1] else "infer",
    ),
)
def test_batchnorm(dtype, shape, training, rng):
    n, d, h, w = shape
    layer = built(BatchNorm(momentum=0.8, eps=1e-3, input_shape=shape[1:]), dtype)
    randomize_parameters(layer, rng)
    layer.running_mean[...] = rng.standard_normal(d)
    layer.running_var[...] = rng.uniform(0.5, 2.0, d)
    layer.is_training = training
    before = layer.running_mean.copy(), layer.running_var.copy()
    updated = {}

    def reference_forward(x, p):
        y, updated["mean"], updated["var"] = ref.batchnorm(
            x, p["gamma"], p["beta"], *before, momentum=0.8, eps=1e-3, training=training
        )
        return y

    count = n * h * w
    # Inputs shifted and scaled per channel so the normalisation has work to do.
    x = normal(rng, shape, dtype) * np.asarray(rng.uniform(0.5, 3, (d, 1, 1)), dtype) + dtype(2)
    check_against_reference(
        layer,
        x,
        reference_forward,
        rng,
        reductions={
            "forward": count,
            "grad_inputs": count,
            "gamma_grad": count,
            "beta_grad": count,
        },
    )
    assert_close(
        "running_mean", layer.running_mean, updated["mean"].numpy(), dtype=dtype, reduction=count
    )
    assert_close(
        "running_var", layer.running_var, updated["var"].numpy(), dtype=dtype, reduction=count
    )
    if not training:
        np.testing.assert_array_equal(layer.running_mean, before[0])


@pytest.mark.parametrize(
    "make, training",
    [
        pytest.param(lambda: ReLU(input_shape=(3, 4, 5)), True, id="relu"),
        pytest.param(lambda: BatchNorm(input_shape=(3, 4, 5)), True, id="batchnorm-train"),
        pytest.param(lambda: BatchNorm(input_shape=(3, 4, 5)), False, id="batchnorm-infer"),
        pytest.param(
            lambda: Conv2D(2, 3, input_shape=(3, 4, 5), kernel="im2col"), True, id="conv2d"
        ),
    ],
)
@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_a_non_contiguous_batch_gives_what_its_contiguous_copy_gives(make, training, layout, rng):
    """The layers work on flattened (n, d * h * w) views of their outputs: a batch in another
    memory layout must come out the same (to rounding: BLAS may add a strided batch's channel
    sums in another order), not written into a copy that is then dropped."""
    layer = built(make(), np.float64)
    randomize_parameters(layer, rng)
    layer.is_training = training
    x = normal(rng, (2, 3, 4, 10), np.float64)[..., ::2]  # strided along w
    if layout == "fortran":
        x = np.asfortranarray(x)
    g = normal(rng, (2, *layer.output_shape), np.float64)
    state = {name: getattr(layer, name).copy() for name in layer.state_names}
    expected = layer.forward(np.ascontiguousarray(x)), layer.backward(g)
    for name, value in state.items():
        getattr(layer, name)[...] = value
    got = layer.forward(x), layer.backward(np.asfortranarray(g))
    for want, have in zip(expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-12)


def test_batchnorm_running_statistics_follow_the_assignment_formula(rng):
    layer = built(BatchNorm(momentum=0.9, input_shape=(2, 3, 3)), np.float64)
    batches = [rng.standard_normal((4, 2, 3, 3)) * 3 + 1 for _ in range(3)]
    mean, var = np.zeros(2), np.ones(2)
    for batch in batches:
        layer.forward(batch)
        mean = 0.9 * mean + 0.1 * batch.mean(axis=(0, 2, 3))
        var = 0.9 * var + 0.1 * batch.var(axis=(0, 2, 3))  # biased, as the assignment says
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, var, rtol=1e-12)


@pytest.mark.parametrize(
    "dtype, shape, refused",
    grid(
        "batchnorm",
        [((1, 2, 1, 1), True), ((2, 2, 1, 1), False), ((1, 2, 1, 2), False)],
        lambda c: c[0],
        lambda c: "one-value" if c[1] else "two-values",
    ),
)
def test_batchnorm_needs_two_values_per_channel_to_train(dtype, shape, refused, rng):
    """One value per channel normalises to 0 whatever it is (output beta, zero gradients):
    training on it is an error, as in torch; inference uses the running statistics."""
    layer = built(BatchNorm(input_shape=shape[1:]), dtype)
    x = normal(rng, shape, dtype)
    if refused:
        message = r"more than one value per channel, got inputs of shape \(1, 2, 1, 1\)"
        with pytest.raises(ValueError, match=message):
            layer.forward(x)
    else:
        assert np.isfinite(layer.forward(x)).all()
    layer.is_training = False
    assert np.isfinite(layer.forward(x)).all()


# --- Flatten, Dropout, RandomFlip -----------------------------------------------------------

FLATTEN_SHAPES = [(2, 3, 4, 5), (1, 1, 1, 1), (3, 7)]


@pytest.mark.parametrize(
    "dtype, shape", grid("flatten", [(s,) for s in FLATTEN_SHAPES], lambda c: c[0], lambda c: "")
)
def test_flatten(dtype, shape, rng):
    layer = built(Flatten(input_shape=shape[1:]), dtype)
    assert layer.output_shape == (int(np.prod(shape[1:])),)
    check_against_reference(layer, normal(rng, shape, dtype), lambda x, _: ref.flatten(x), rng)


DROPOUT_CASES = [((3, 4, 5), 0.3, True), ((3, 4, 5), 0.3, False), ((2, 3, 4, 4), 0.5, True)]


@pytest.mark.parametrize(
    "dtype, shape, p, training",
    grid(
        "dropout",
        DROPOUT_CASES,
        lambda c: c[0],
        lambda c: f"p{c[1]:g}-{'train' if c[2] else 'infer'}",
    ),
)
def test_dropout(dtype, shape, p, training, rng, monkeypatch):
    u = rng.uniform(size=shape)
    calls = fixed_uniform(monkeypatch, [u])
    layer = built(Dropout(p, input_shape=shape[1:]), dtype)
    layer.is_training = training
    check_against_reference(
        layer, normal(rng, shape, dtype), lambda x, _: ref.dropout(x, u > p, p, training), rng
    )
    assert calls == ([shape] if training else [])  # one np.random.uniform(size=x.shape) call


def test_dropout_keeps_where_u_exceeds_p_without_rescaling(monkeypatch):
    fixed_uniform(monkeypatch, [np.array([[0.1, 0.25, 0.26, 0.9]])])
    layer = built(Dropout(0.25, input_shape=(4,)), np.float32)
    out = layer.forward(np.full((1, 4), 2.0, dtype=np.float32))
    np.testing.assert_array_equal(out, [[0.0, 0.0, 2.0, 2.0]])
    layer.is_training = False
    np.testing.assert_array_equal(layer.forward(np.full((1, 4), 2.0, np.float32)), [[1.5] * 4])


FLIP_SHAPES = [(4, 2, 3, 5), (1, 1, 2, 2)]


@pytest.mark.parametrize(
    "dtype, shape", grid("randomflip", [(s,) for s in FLIP_SHAPES], lambda c: c[0], lambda c: "")
)
def test_random_flip(dtype, shape, rng, monkeypatch):
    u = rng.uniform(size=shape[0])
    u[0] = 0.2  # at least one flipped image
    fixed_uniform(monkeypatch, [u])
    layer = built(RandomFlip(input_shape=shape[1:]), dtype)
    check_against_reference(
        layer, normal(rng, shape, dtype), lambda x, _: ref.random_flip(x, u < 0.5), rng
    )


def test_random_flip_is_identity_at_inference(rng):
    layer = built(RandomFlip(input_shape=(2, 3, 3)), np.float32)
    layer.is_training = False
    x = normal(rng, (5, 2, 3, 3), np.float32)
    np.testing.assert_array_equal(layer.forward(x), x)
    np.testing.assert_array_equal(layer.backward(x), x)


def test_random_flip_mirrors_about_half_of_the_images():
    np.random.seed(7)  # the layer draws from numpy's global generator, like Dropout
    layer = built(RandomFlip(input_shape=(1, 1, 2)), np.float64)
    x = np.tile(np.array([[[[0.0, 1.0]]]]), (2000, 1, 1, 1))
    flipped = layer.forward(x)[:, 0, 0, 0] == 1.0
    assert 900 < flipped.sum() < 1100
    np.testing.assert_array_equal(flipped, layer.flipped)


# --- cross-entropy and the fused softmax path -----------------------------------------------


def _one_hot(rng, n, classes, dtype):
    return np.eye(classes, dtype=dtype)[rng.integers(0, classes, n)]


LOSS_SHAPES = [(1, 2), (5, 10), (3, 4)]


@pytest.mark.parametrize(
    "dtype, shape", grid("crossentropy", [(s,) for s in LOSS_SHAPES], lambda c: c[0], lambda c: "")
)
def test_cross_entropy(dtype, shape, rng):
    n, classes = shape
    y_gt = _one_hot(rng, n, classes, dtype)
    y_pred = rng.dirichlet(np.ones(classes), n).astype(dtype)
    y_pred[0, 0] = 0  # clipped at eps in value and gradient
    loss = CrossEntropy()
    pred_t = ref.tensor(y_pred, requires_grad=True)
    expected = ref.cross_entropy(y_gt, pred_t, EPS)
    expected.backward()
    value = loss.value(y_gt, y_pred)
    assert value.shape == (1,)
    assert_close("loss", value, expected.detach().numpy(), dtype=dtype, reduction=classes)
    grad = loss.gradient(y_gt, y_pred)
    expected_grad = -y_gt / np.maximum(y_pred.astype(np.float64), EPS) / n  # section 5.4 / n
    assert_close("grad_y_pred", grad, expected_grad, dtype=dtype)
    unclipped = y_pred >= EPS
    assert_close(
        "grad_y_pred_vs_torch", grad[unclipped], pred_t.grad.numpy()[unclipped], dtype=dtype
    )


@pytest.mark.parametrize(
    "dtype, shape, scale",
    grid(
        "softmax_crossentropy",
        [((4, 10), 1.0), ((3, 5), 20.0), ((1, 3), 1.0)],
        lambda c: c[0],
        lambda c: f"scale{c[1]:g}",
    ),
)
def test_fused_softmax_cross_entropy(dtype, shape, scale, rng):
    n, classes = shape
    y_gt = _one_hot(rng, n, classes, dtype)
    logits = normal(rng, shape, dtype, scale)
    loss, probs, grad = softmax_cross_entropy(y_gt, logits)
    # The value is the clipped cross-entropy; the gradient is that of the unclipped one (which
    # keeps a learning signal for confidently wrong samples, where clipping would zero it).
    expected = ref.softmax_cross_entropy(y_gt, logits, EPS)
    assert_close("loss", loss, expected.numpy(), dtype=dtype, reduction=classes)
    logits_t = ref.tensor(logits, requires_grad=True)
    ref.softmax_cross_entropy(y_gt, logits_t, None).backward()
    assert_close("probabilities", probs, ref.softmax(logits).numpy(), dtype=dtype)
    assert_close("grad_logits", grad, logits_t.grad.numpy(), dtype=dtype, reduction=classes)

    # Equal to the unfused path (Softmax layer, then CrossEntropy) where that one is finite.
    softmax = built(Softmax(input_shape=(classes,)), dtype)
    unfused_probs = softmax.forward(logits)
    ce = CrossEntropy()
    assert_close(
        "unfused_loss", loss, ce.value(y_gt, unfused_probs), dtype=dtype, reduction=classes
    )
    if np.all(unfused_probs >= EPS):
        unfused_grad = softmax.backward(ce.gradient(y_gt, unfused_probs))
        assert_close("unfused_grad", grad, unfused_grad, dtype=dtype, reduction=classes)


def test_fused_path_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4]], dtype=np.float32)
    y_gt = np.array([[0.0, 0.0, 1.0]], dtype=np.float32)
    loss, _, grad = softmax_cross_entropy(y_gt, logits)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, [-np.log(np.float32(EPS))], rtol=1e-6)  # clipped like CE
    np.testing.assert_array_equal(grad, [[1.0, 0.0, -1.0]])


# --- parameters live in place ---------------------------------------------------------------


def test_update_parameters_is_in_place_so_references_stay_live(rng):
    layer = built(Dense(3, input_shape=(2,)), np.float32, SGD(lr=0.5))
    weights = layer.weights
    before = weights.copy()
    layer.forward(normal(rng, (4, 2), np.float32))
    layer.backward(normal(rng, (4, 3), np.float32))
    layer.update_parameters()
    assert layer.weights is weights and weights.dtype == np.float32
    np.testing.assert_allclose(weights, before - np.float32(0.5) * layer.weights_grad, rtol=1e-6)


def test_dense_initialisation():
    np.random.seed(99)
    layer = built(Dense(300, input_shape=(200,)), np.float32)
    assert layer.weights.shape == (300, 200) and layer.weights.dtype == np.float32
    np.testing.assert_allclose(layer.weights.std(), np.sqrt(2 / 200), rtol=0.02)
    np.testing.assert_array_equal(layer.biases, 0)


# --- explicit generators --------------------------------------------------------------------


def test_random_layers_draw_from_their_own_generator_and_leave_the_global_one_alone(rng):
    """With ``rng=`` a layer draws exactly what that generator gives, one ``uniform`` call per
    forward as the assignment's contract says, and numpy's global state is untouched."""
    np.random.seed(11)
    before = np.random.get_state()[1].copy()
    x = normal(rng, (6, 2, 3, 4), np.float32)
    dropout = built(Dropout(0.3, input_shape=(2, 3, 4), rng=np.random.default_rng(5)), np.float32)
    flip = built(RandomFlip(input_shape=(2, 3, 4), rng=np.random.default_rng(6)), np.float32)
    dropout.forward(x)
    flip.forward(x)
    np.testing.assert_array_equal(
        dropout.mask, np.random.default_rng(5).uniform(size=x.shape) > 0.3
    )
    np.testing.assert_array_equal(flip.flipped, np.random.default_rng(6).uniform(size=6) < 0.5)
    assert np.array_equal(np.random.get_state()[1], before)


@pytest.mark.parametrize("make", [
    lambda rng: Dense(4, input_shape=(6,), rng=rng),
    lambda rng: Conv2D(3, 3, input_shape=(2, 5, 5), kernel="im2col", rng=rng),
], ids=["dense", "conv2d"])  # fmt: skip
def test_initial_weights_come_from_the_given_generator(make):
    first = built(make(np.random.default_rng(3)), np.float64)
    np.random.seed(0)  # the global generator plays no part
    second = built(make(np.random.default_rng(3)), np.float64)
    for name in first.parameter_names:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


@pytest.mark.parametrize("bad", ["seed", 42, np.random])
def test_a_generator_must_be_a_generator(bad):
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator \(or RandomState\)"):
        Dropout(0.5, rng=bad)
