"""Whole networks, three SGDMomentum steps in nnbench and in the torch reference.

After every step the loss, every parameter gradient, every updated parameter and BatchNorm's
running statistics must agree. The torch side starts from copies of nnbench's initial
parameters, runs the reference layers under autograd in float64, and applies the reference
momentum step. Dropout masks (and flips) are injected through ``np.random.uniform``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
import reference as ref
from nnbench import (
    BatchNorm,
    Conv2D,
    CrossEntropy,
    Dense,
    Dropout,
    Flatten,
    Model,
    Pooling2D,
    RandomFlip,
    ReLU,
    SGDMomentum,
    Softmax,
)
from nnbench.losses import EPS
from nnbench.verify import assert_close
from tests.engine_helpers import (
    DTYPES,
    case_id,
    fixed_uniform,
    normal,
)

pytestmark = pytest.mark.usefixtures("torch_single_thread")

STEPS = 3
LR, MOMENTUM = 0.1, 0.9


def train_both(model, batches, torch_forward, weight_decay=0.0):
    """Step nnbench and the reference side by side; compare after every step.

    Every tensor is held to the engine's entry of the tolerance table (backend None: the
    network mixes every layer, not just convolutions) with K = 1: on these small nets the
    float32 differences after three steps stay below 5% of that bound, so no reduction
    allowance is needed.
    """
    dtype = model.dtype
    params = {key: ref.tensor(value) for key, value in model.parameters().items()}
    state = {key: ref.tensor(value) for key, value in model.state().items() if key not in params}
    inertia = {key: ref.tensor(np.zeros(value.shape)) for key, value in params.items()}
    for step, (x, y_one_hot, labels) in enumerate(batches, start=1):
        loss, _ = model.train_on_batch(x, labels)

        leaves = {key: value.clone().requires_grad_(True) for key, value in params.items()}
        probs = torch_forward(leaves, state, ref.tensor(x), step)
        loss_t = ref.cross_entropy(y_one_hot, probs, EPS)
        loss_t.backward()
        kw = {"dtype": dtype}
        # The float came from a loss computed in ``dtype``, so converting back is exact.
        assert_close(f"step{step}.loss", np.array([loss], dtype), loss_t.detach().numpy(), **kw)
        grads = model.gradients()
        for key, leaf in leaves.items():
            assert grads[key].dtype == dtype, f"{key}_grad is {grads[key].dtype}"
            assert_close(f"step{step}.{key}_grad", grads[key], leaf.grad.numpy(), **kw)
            params[key], inertia[key] = ref.sgd_momentum_step(
                params[key], leaf.grad, inertia[key], LR, MOMENTUM, weight_decay
            )
        for key, value in model.parameters().items():
            assert value.dtype == dtype
            assert_close(f"step{step}.{key}", value, params[key].numpy(), **kw)
        for key, value in state.items():
            assert_close(f"step{step}.{key}", model.state()[key], value.numpy(), **kw)


def make_batches(rng, dtype, n, sample_shape, classes):
    batches = []
    for _ in range(STEPS):
        labels = rng.integers(0, classes, n)
        batches.append((normal(rng, (n, *sample_shape), dtype), np.eye(classes)[labels], labels))
    return batches


@pytest.mark.parametrize("dtype", [pytest.param(d, id=np.dtype(d).name) for d in DTYPES])
def test_dense_network(dtype, rng):
    np.random.seed(0)  # He init draws from the global generator; the values do not matter
    model = Model(CrossEntropy(), SGDMomentum(LR, MOMENTUM, weight_decay=0.01), dtype=dtype)
    model.add(Dense(5, input_shape=(6,)))
    model.add(ReLU())
    model.add(Dense(4))
    model.add(Softmax())

    def torch_forward(p, state, x, step):
        hidden = ref.relu(ref.dense(x, p["0.Dense.weights"], p["0.Dense.biases"]))
        return ref.softmax(ref.dense(hidden, p["2.Dense.weights"], p["2.Dense.biases"]))

    batches = make_batches(rng, dtype, 8, (6,), 4)
    train_both(model, batches, torch_forward, weight_decay=0.01)


CONV_GRID = [
    pytest.param(backend, dtype, flip, id=case_id(f"convnet-{backend}", dtype, (4, 3, 8, 8), flip))
    for backend in kernels.available()
    for dtype in DTYPES
    for flip in ("noflip", "flip")
]


@pytest.mark.parametrize("backend, dtype, flip", CONV_GRID)
def test_conv_network(backend, dtype, flip, rng, monkeypatch):
    n, shape, classes, p_drop = 4, (3, 8, 8), 5, 0.25
    reason = kernels.get(backend).supports((n, *shape), (4, 3, 3, 3), 1, np.dtype(dtype))
    if reason:
        pytest.skip(reason)
    np.random.seed(0)
    model = Model(CrossEntropy(), SGDMomentum(LR, MOMENTUM), kernel=backend, dtype=dtype)
    if flip == "flip":
        model.add(RandomFlip(input_shape=shape))
    model.add(Conv2D(4, 3, input_shape=shape))
    model.add(BatchNorm(momentum=0.9))
    model.add(ReLU())
    model.add(Pooling2D(2, "max"))
    model.add(Dropout(p_drop))
    model.add(Flatten())
    model.add(Dense(classes))
    model.add(Softmax())
    assert [layer.backend.name for layer in model.layers if isinstance(layer, Conv2D)] == [backend]
    i = 1 if flip == "flip" else 0  # index of the Conv2D layer in the model

    flips = [rng.uniform(size=n) for _ in range(STEPS)]
    drops = [rng.uniform(size=(n, 4, 4, 4)) for _ in range(STEPS)]
    injected = [u for step in zip(flips, drops) for u in (step if flip == "flip" else step[1:])]
    fixed_uniform(monkeypatch, injected)

    def torch_forward(p, state, x, step):
        if flip == "flip":
            x = ref.random_flip(x, flips[step - 1] < 0.5)
        conv = ref.conv2d(x, p[f"{i}.Conv2D.kernels"], p[f"{i}.Conv2D.biases"], 1)
        key = f"{i + 1}.BatchNorm"
        normed, state[f"{key}.running_mean"], state[f"{key}.running_var"] = ref.batchnorm(
            conv,
            p[f"{key}.gamma"],
            p[f"{key}.beta"],
            state[f"{key}.running_mean"],
            state[f"{key}.running_var"],
            momentum=0.9,
            eps=1e-5,
            training=True,
        )
        pooled = ref.pool2d(ref.relu(normed), 2, "max")
        dropped = ref.dropout(pooled, drops[step - 1] > p_drop, p_drop, training=True)
        logits = ref.dense(
            ref.flatten(dropped), p[f"{i + 6}.Dense.weights"], p[f"{i + 6}.Dense.biases"]
        )
        return ref.softmax(logits)

    batches = make_batches(rng, dtype, n, shape, classes)
    train_both(model, batches, torch_forward)
