"""Bad input to the engine: each case raises ValueError or TypeError naming the argument.

Every case is (id, call, expected exception, regex the message must match); the regex names
the argument and, where there is one, what was expected.
"""

from __future__ import annotations

import numpy as np
import pytest

import kernels
from nnbench import (
    SGD,
    BatchNorm,
    CallOrderError,
    Conv2D,
    CrossEntropy,
    Dense,
    Dropout,
    Pooling2D,
    RandomFlip,
    ReLU,
    SGDMomentum,
    Softmax,
)
from nnbench.model import Model
from tests.engine_helpers import built

BACKEND = kernels.available()[0]


def conv(**kw):
    return built(Conv2D(2, 3, input_shape=(3, 8, 8), kernel=BACKEND, **kw), np.float32)


def dense_model(dtype=np.float32):
    model = Model(CrossEntropy(), SGD(0.1), dtype=dtype)
    model.add(Dense(3, input_shape=(4,)))
    model.add(Softmax())
    return model


def fit(x=None, y=None, **kw):
    x = np.zeros((5, 4), np.float32) if x is None else x
    y = np.zeros(5, np.int64) if y is None else y
    return dense_model().fit(x, y, **{"batch_size": 2, "epochs": 1, "verbose": False, **kw})


def with_value(shape, index, value, dtype=np.float32):
    array = np.zeros(shape, dtype)
    array[index] = value
    return array


def one_hot_with(row, values, n=5):
    """One-hot labels (n, 3) with row ``row`` replaced by ``values``."""
    y = np.eye(3, dtype=np.float32)[np.arange(n) % 3]
    y[row] = values
    return y


CASES = [
    # --- layer arguments ---
    ("dense-units-zero", lambda: Dense(0), ValueError, r"units must be a positive int, got 0"),
    ("dense-units-str", lambda: Dense("3"), TypeError, r"units must be a positive int"),
    ("conv-even-kernel", lambda: Conv2D(4, kernel_size=4), ValueError, r"kernel_size must be odd"),
    ("conv-channels-zero", lambda: Conv2D(0), ValueError, r"output_channels must be a positive"),
    ("conv-kernel-type", lambda: Conv2D(4, kernel=3), TypeError, r"kernel must be a backend name"),
    (
        "conv-unknown-backend",
        lambda: built(Conv2D(2, input_shape=(1, 4, 4), kernel="nope"), np.float32),
        ValueError,
        r"kernel: unknown backend 'nope'; available backends: ",
    ),
    ("pool-unknown-mode", lambda: Pooling2D(2, "median"), ValueError, r"pool_mode must be one of"),
    ("pool-size-zero", lambda: Pooling2D(0), ValueError, r"pool_size must be a positive int"),
    (
        "pool-size-does-not-divide",
        lambda: built(Pooling2D(3, input_shape=(1, 6, 4)), np.float32),
        ValueError,
        r"pool_size=3 must divide the image height and width.*\(1, 6, 4\)",
    ),
    ("dropout-negative-p", lambda: Dropout(-0.1), ValueError, r"p must be in \[0.0, 1.0\)"),
    ("dropout-p-one", lambda: Dropout(1.0), ValueError, r"p must be in \[0.0, 1.0\), got 1.0"),
    ("dropout-p-nan", lambda: Dropout(float("nan")), ValueError, r"p must be finite"),
    ("batchnorm-momentum", lambda: BatchNorm(momentum=1.5), ValueError, r"momentum must be in"),
    ("batchnorm-eps-zero", lambda: BatchNorm(eps=0), ValueError, r"eps must be in \(0.0, inf"),
    ("flip-probability", lambda: RandomFlip(2), ValueError, r"probability must be in"),
    ("input-shape-negative", lambda: Dense(2, input_shape=(-1,)), ValueError, r"input_shape must"),
    (
        "dense-input-rank",
        lambda: built(Dense(2, input_shape=(3, 4)), np.float32),
        ValueError,
        r"input_shape of Dense must have 1 axes \(d,\), got \(3, 4\)",
    ),
    (
        "conv-input-rank",
        lambda: built(Conv2D(2, input_shape=(12,), kernel=BACKEND), np.float32),
        ValueError,
        r"input_shape of Conv2D must have 3 axes \(d, h, w\)",
    ),
    ("layer-dtype-int", lambda: built(ReLU(input_shape=(2,)), np.int32), TypeError, r"dtype must"),
    (
        "layer-optimizer-without-updater",
        lambda: Dense(2, input_shape=(3,)).build(object()),
        TypeError,
        r"optimizer must have a callable get_parameter_updater\(parameter_shape\).*got object",
    ),
    # --- layer forward / backward ---
    (
        "conv-forward-rank",
        lambda: conv().forward(np.zeros((3, 8, 8), np.float32)),
        ValueError,
        r"inputs must have 4 dimensions with shape \(n, 3, 8, 8\), got 3",
    ),
    (
        "conv-channel-mismatch",
        lambda: conv().forward(np.zeros((2, 4, 8, 8), np.float32)),
        ValueError,
        r"inputs must have shape \(n, 3, 8, 8\), got \(2, 4, 8, 8\)",
    ),
    (
        "conv-forward-int-dtype",
        lambda: conv().forward(np.zeros((2, 3, 8, 8), np.int64)),
        TypeError,
        r"inputs must have dtype float32 \(the model's dtype\), got int64",
    ),
    (
        "dense-forward-float64-into-float32",
        lambda: built(Dense(2, input_shape=(3,)), np.float32).forward(np.zeros((1, 3))),
        TypeError,
        r"inputs must have dtype float32.*got float64",
    ),
    (
        "forward-list",
        lambda: built(ReLU(input_shape=(2,)), np.float32).forward([[1.0, 2.0]]),
        TypeError,
        r"inputs must be a numpy.ndarray",
    ),
    (
        "forward-before-build",
        lambda: Dense(2, input_shape=(3,)).forward(np.zeros((1, 3), np.float32)),
        ValueError,
        r"Dense.forward called before build",
    ),
    (
        "backward-before-forward",
        lambda: conv().backward(np.zeros((1, 2, 8, 8), np.float32)),
        CallOrderError,
        r"Conv2D.backward called before forward: grad_outputs",
    ),
    (
        "backward-wrong-shape",
        lambda: _forwarded_relu().backward(np.zeros((2, 4), np.float32)),
        ValueError,
        r"grad_outputs must have the shape of the last forward output \(2, 3\), got \(2, 4\)",
    ),
    # --- loss ---
    (
        "loss-shape-mismatch",
        lambda: CrossEntropy().value(np.zeros((4, 3)), np.full((4, 2), 0.5)),
        ValueError,
        r"y_gt has shape \(4, 3\) but y_pred has shape \(4, 2\)",
    ),
    (
        "loss-gradient-shape-mismatch",
        lambda: CrossEntropy().gradient(np.zeros((4,)), np.full((4, 2), 0.5)),
        ValueError,
        r"y_gt has shape \(4,\) but y_pred has shape \(4, 2\)",
    ),
    (
        "loss-int-predictions",
        lambda: CrossEntropy().value(np.zeros((2, 2)), np.zeros((2, 2), np.int64)),
        TypeError,
        r"y_pred must have dtype float32 or float64",
    ),
    # --- optimizers ---
    ("sgd-negative-lr", lambda: SGD(-1.0), ValueError, r"lr must be in \[0.0, inf\), got -1.0"),
    ("sgd-lr-str", lambda: SGD("0.1"), TypeError, r"lr must be a real number"),
    ("sgd-lr-inf", lambda: SGD(float("inf")), ValueError, r"lr must be finite"),
    ("momentum-one", lambda: SGDMomentum(0.1, momentum=1.0), ValueError, r"momentum must be in"),
    (
        "momentum-weight-decay",
        lambda: SGDMomentum(0.1, weight_decay=-1),
        ValueError,
        r"weight_decay must be in",
    ),
    (
        "updater-given-an-array-not-a-shape",
        lambda: SGDMomentum(0.1).get_parameter_updater(np.zeros(3)),
        ValueError,
        r"parameter_shape must be a tuple of positive ints",
    ),
    # --- model construction ---
    ("model-loss-type", lambda: Model("ce", SGD(0.1)), TypeError, r"loss must be an nnbench Loss"),
    (
        "model-optimizer",
        lambda: Model(CrossEntropy(), 0.1),
        TypeError,
        r"optimizer must have a callable get_parameter_updater\(parameter_shape\).*got float",
    ),
    (
        "model-kernel",
        lambda: Model(CrossEntropy(), SGD(0.1), kernel="nope"),
        ValueError,
        r"kernel: unknown backend 'nope'; available backends: ",
    ),
    ("model-dtype", lambda: Model(CrossEntropy(), SGD(0.1), dtype=np.int32), TypeError, r"dtype"),
    (
        "model-first-layer-without-shape",
        lambda: Model(CrossEntropy(), SGD(0.1)).add(Dense(3)),
        ValueError,
        r"the first layer \(Dense\) needs input_shape",
    ),
    ("model-add-non-layer", lambda: dense_model().add("relu"), TypeError, r"layer must be"),
    (
        "model-shape-chain",
        lambda: dense_model().add(Dense(2, input_shape=(4,))),
        ValueError,
        r"input_shape of Dense is \(4,\) but the previous layer Softmax outputs \(3,\)",
    ),
    (
        "model-without-layers",
        lambda: Model(CrossEntropy(), SGD(0.1)).predict(np.zeros((1, 2), np.float32)),
        ValueError,
        r"the model has no layers",
    ),
    # --- fit / evaluate / predict inputs ---
    (
        "fit-nan",
        lambda: fit(x=with_value((5, 4), (2, 1), np.nan)),
        ValueError,
        r"x_train must be finite, found 1",
    ),
    (
        "fit-inf",
        lambda: fit(x=with_value((5, 4), (0, 0), np.inf)),
        ValueError,
        r"x_train must be finite",
    ),
    (
        "fit-valid-inf",
        lambda: fit(x_valid=with_value((2, 4), (1, 3), -np.inf), y_valid=np.zeros(2, np.int64)),
        ValueError,
        r"x_valid must be finite",
    ),
    (
        "fit-float64-into-float32-model",
        lambda: fit(x=np.zeros((5, 4))),
        TypeError,
        r"x_train must have dtype float32 \(the model's dtype\), got float64",
    ),
    (
        "fit-wrong-sample-shape",
        lambda: fit(x=np.zeros((5, 5), np.float32)),
        ValueError,
        r"x_train must have shape \(n, 4\), got \(5, 5\)",
    ),
    (
        "fit-label-count",
        lambda: fit(y=np.zeros(4, np.int64)),
        ValueError,
        r"y_train must hold one label per sample \(5\), got shape \(4,\)",
    ),
    (
        "fit-one-hot-classes",
        lambda: fit(y=np.zeros((5, 4), np.float32)),
        ValueError,
        r"y_train must be one-hot with shape \(5, 3\).*got shape \(5, 4\)",
    ),
    (
        "fit-one-hot-row-of-zeros",
        lambda: fit(y=one_hot_with(3, [0, 0, 0])),
        ValueError,
        r"y_train rows must be one-hot \(entries 0 or 1, exactly one 1 per row\), but 1 of 5",
    ),
    (
        "fit-one-hot-all-zero",
        lambda: fit(y=np.zeros((5, 3), np.float32)),
        ValueError,
        r"y_train rows must be one-hot .* 5 of 5 are not; the first is row 0: \[0\. 0\. 0\.\]",
    ),
    (
        "fit-one-hot-negative-entry",
        lambda: fit(y=one_hot_with(1, [-1, 1, 1])),
        ValueError,
        r"y_train rows must be one-hot .* the first is row 1: \[-1\.  1\.  1\.\]",
    ),
    (
        "fit-one-hot-two-ones",
        lambda: fit(y=one_hot_with(4, [1, 1, 0])),
        ValueError,
        r"y_train rows must be one-hot .* the first is row 4",
    ),
    (
        "fit-one-hot-soft-labels",
        lambda: fit(y=one_hot_with(0, [0.5, 0.5, 0])),
        ValueError,
        r"y_train rows must be one-hot .* the first is row 0",
    ),
    (
        "fit-valid-one-hot-row-of-zeros",
        lambda: fit(x_valid=np.zeros((5, 4), np.float32), y_valid=one_hot_with(2, [0, 0, 0])),
        ValueError,
        r"y_valid rows must be one-hot .* the first is row 2",
    ),
    (
        "evaluate-one-hot-row-of-zeros",
        lambda: dense_model().evaluate(np.zeros((5, 4), np.float32), one_hot_with(0, [0, 0, 0])),
        ValueError,
        r"y rows must be one-hot .* the first is row 0",
    ),
    (
        "fit-label-out-of-range",
        lambda: fit(y=np.array([0, 1, 2, 3, 0])),
        ValueError,
        r"y_train class labels must be in \[0, 3\)",
    ),
    (
        "fit-label-negative",
        lambda: fit(y=np.array([0, 1, -1, 2, 0])),
        ValueError,
        r"y_train class labels must be in \[0, 3\), got values in \[-1, 2\]",
    ),
    (
        "fit-float-class-labels",
        lambda: fit(y=np.zeros(5)),
        TypeError,
        r"y_train with shape \(n,\) must hold integer class labels",
    ),
    ("fit-batch-size", lambda: fit(batch_size=0), ValueError, r"batch_size must be a positive"),
    ("fit-epochs", lambda: fit(epochs=0), ValueError, r"epochs must be a positive int"),
    (
        "fit-valid-pair",
        lambda: fit(x_valid=np.zeros((2, 4), np.float32)),
        ValueError,
        r"x_valid and y_valid",
    ),
    ("fit-schedule", lambda: fit(lr_schedule=0.1), TypeError, r"lr_schedule must be callable"),
    ("fit-budget", lambda: fit(time_budget=-1), ValueError, r"time_budget must be in \[0.0"),
    (
        "fit-schedule-negative-lr",
        lambda: fit(lr_schedule=lambda progress: -0.5),
        ValueError,
        r"lr must be in \[0.0, inf\), got -0.5",
    ),
    (
        "evaluate-shape",
        lambda: dense_model().evaluate(np.zeros((3, 2), np.float32), np.zeros(3, np.int64)),
        ValueError,
        r"x must have shape \(n, 4\), got \(3, 2\)",
    ),
    (
        "predict-nan",
        lambda: dense_model().predict(with_value((3, 4), (2, 2), np.nan)),
        ValueError,
        r"x must be finite",
    ),
    (
        "predict-float32-into-float64-model",
        lambda: dense_model(np.float64).predict(np.zeros((3, 4), np.float32)),
        TypeError,
        r"x must have dtype float64",
    ),
]


def _forwarded_relu():
    layer = built(ReLU(input_shape=(3,)), np.float32)
    layer.forward(np.zeros((2, 3), np.float32))
    return layer


@pytest.mark.parametrize(
    "call, error, message", [pytest.param(c, e, m, id=i) for i, c, e, m in CASES]
)
def test_bad_input(call, error, message):
    assert issubclass(error, (ValueError, TypeError))
    with pytest.raises(error, match=message):
        call()


def test_call_order_error_is_a_value_error():
    assert issubclass(CallOrderError, ValueError) and issubclass(CallOrderError, RuntimeError)
