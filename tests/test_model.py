"""Model: fit history, time budget, learning-rate schedule, NaN stop, labels, evaluate/predict,
save/load, dtype end to end, backend selection, and the fused softmax cross-entropy path."""

from __future__ import annotations

import io
import itertools
import json
import os
import re

import numpy as np
import pytest

import kernels
from nnbench import (
    SGD,
    BatchNorm,
    Conv2D,
    CrossEntropy,
    Dense,
    Dropout,
    Flatten,
    History,
    Loss,
    Model,
    NonFiniteLossError,
    Pooling2D,
    RandomFlip,
    ReLU,
    SGDMomentum,
    Softmax,
)
from nnbench.verify import assert_close
from tests.engine_helpers import DTYPES

pytestmark = pytest.mark.usefixtures("torch_single_thread")

BACKEND = kernels.available()[0]
RECORD_KEYS = {
    "epoch",
    "steps",
    "samples",
    "elapsed_seconds",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_accuracy",
    "lr",
    "stopped_early",
}


def blobs(rng, n, dtype=np.float32, features=4, classes=3):
    """Gaussian blobs around well-separated centres: an easy, learnable problem."""
    centres = np.eye(classes, features) * 4
    labels = rng.integers(0, classes, n)
    x = centres[labels] + rng.standard_normal((n, features))
    return x.astype(dtype), labels


def dense_model(dtype=np.float32, optimizer=None, features=4, classes=3):
    model = Model(CrossEntropy(), optimizer or SGDMomentum(0.1, momentum=0.9), dtype=dtype)
    model.add(Dense(16, input_shape=(features,)))
    model.add(ReLU())
    model.add(Dense(classes))
    model.add(Softmax())
    return model


def conv_model(dtype=np.float32, kernel=BACKEND):
    model = Model(CrossEntropy(), SGDMomentum(0.05, momentum=0.9), kernel=kernel, dtype=dtype)
    model.add(RandomFlip(input_shape=(2, 6, 6)))
    model.add(Conv2D(3, 3))
    model.add(BatchNorm())
    model.add(ReLU())
    model.add(Pooling2D(2, "max"))
    model.add(Conv2D(4, 1))
    model.add(Pooling2D(3, "avg"))
    model.add(Dropout(0.2))
    model.add(Flatten())
    model.add(Dense(3))
    model.add(Softmax())
    return model


def images(rng, n, dtype=np.float32):
    labels = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 2, 6, 6)) + labels[:, None, None, None]
    return x.astype(dtype), labels


# --- fit and its history --------------------------------------------------------------------


def test_fit_learns_and_records_a_history(rng):
    np.random.seed(0)
    x, y = blobs(rng, 300)
    x_valid, y_valid = blobs(rng, 100)
    model = dense_model()
    history = model.fit(
        x, y, batch_size=32, epochs=3, verbose=False, x_valid=x_valid, y_valid=y_valid
    )
    assert isinstance(history, History) and len(history) == 3 and not history.stopped_early
    json.dumps(list(history))  # plain Python values
    for epoch, record in enumerate(history, start=1):
        assert set(record) == RECORD_KEYS
        assert record["epoch"] == epoch and record["steps"] == 10 and record["samples"] == 300
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["valid_accuracy"] <= 1
        assert record["lr"] == 0.1 and record["stopped_early"] is False
    elapsed = [r["elapsed_seconds"] for r in history]
    assert all(0 < a < b for a, b in itertools.pairwise(elapsed))
    assert history[-1]["valid_accuracy"] > 0.9
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (history[-1]["valid_loss"], history[-1]["valid_accuracy"]) == model.evaluate(
        x_valid, y_valid, 256
    )


def test_history_without_validation_has_none(rng):
    x, y = blobs(rng, 20)
    history = dense_model().fit(x, y, batch_size=8, epochs=1, verbose=False)
    assert history[0]["valid_loss"] is None and history[0]["valid_accuracy"] is None
    assert history[0]["steps"] == 3 and history[0]["samples"] == 20


def test_verbose_shows_a_bar_and_the_validation_metrics(rng, capsys):
    x, y = blobs(rng, 40)
    dense_model().fit(x, y, batch_size=16, epochs=2, verbose=True, x_valid=x, y_valid=y)
    out, err = capsys.readouterr()
    assert "epoch 1/2" in err and "epoch 2/2" in err  # the bars (stderr)
    assert "loss=" in err and "acc=" in err  # with the running loss and accuracy
    assert out.count("valid loss") == 2  # one summary line per epoch (stdout)


def test_quiet_fit_prints_nothing(rng, capsys):
    x, y = blobs(rng, 20)
    dense_model().fit(x, y, batch_size=8, epochs=1, verbose=False)
    assert capsys.readouterr() == ("", "")


def test_time_budget_stops_after_the_step_it_ran_out_in(rng):
    x, y = blobs(rng, 100)
    history = dense_model().fit(
        x, y, batch_size=10, epochs=5, verbose=False, x_valid=x, y_valid=y, time_budget=0.0
    )
    assert history.stopped_early and len(history) == 1
    record = history[0]
    assert record["stopped_early"] is True and record["steps"] == 1 and record["samples"] == 10
    assert record["valid_accuracy"] is not None  # the partial epoch is still validated


def test_generous_time_budget_changes_nothing(rng):
    x, y = blobs(rng, 40)
    history = dense_model().fit(x, y, batch_size=10, epochs=2, verbose=False, time_budget=3600)
    assert len(history) == 2 and not history.stopped_early


def test_lr_schedule_sees_progress_over_all_steps_and_sets_lr(rng):
    x, y = blobs(rng, 50)
    seen = []

    def schedule(progress):
        seen.append(progress)
        return 0.1 * (1 - progress)

    model = dense_model(optimizer=SGD(1.0))
    history = model.fit(x, y, batch_size=20, epochs=2, verbose=False, lr_schedule=schedule)
    total = 3 * 2  # ceil(50 / 20) steps per epoch, two epochs
    assert seen == [step / total for step in range(total)]
    assert [r["lr"] for r in history] == [pytest.approx(0.1 * (1 - s / total)) for s in (2, 5)]
    assert model.optimizer.lr == pytest.approx(0.1 * (1 - 5 / total))


def test_lr_schedule_is_applied_before_each_step(rng):
    """A schedule of lr = 0 leaves the parameters untouched."""
    x, y = blobs(rng, 30)
    model = dense_model(optimizer=SGD(1.0))
    before = {k: v.copy() for k, v in model.parameters().items()}
    model.fit(x, y, batch_size=10, epochs=1, verbose=False, lr_schedule=lambda progress: 0.0)
    for key, value in model.parameters().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_non_finite_loss_stops_fit_naming_epoch_and_step(rng):
    np.random.seed(0)
    x, y = blobs(rng, 64)
    model = dense_model(optimizer=SGD(1e30))
    with pytest.raises(
        NonFiniteLossError, match=r"loss became (nan|inf) at epoch 1, step \d+ of 4"
    ) as info:
        model.fit(x * 100, y, batch_size=16, epochs=3, shuffle=False, verbose=False)
    assert isinstance(info.value, FloatingPointError)
    assert info.value.epoch == 1 and info.value.step >= 2


# --- labels, evaluate, predict --------------------------------------------------------------


def test_integer_and_one_hot_labels_train_identically(rng):
    x, y = blobs(rng, 60)
    results = []
    for labels in (y, np.eye(3, dtype=np.float32)[y]):
        np.random.seed(3)
        model = dense_model()
        history = model.fit(x, labels, batch_size=16, epochs=2, verbose=False)
        results.append((history[-1]["train_loss"], model.parameters()))
    assert results[0][0] == results[1][0]
    for key, value in results[0][1].items():
        np.testing.assert_array_equal(value, results[1][1][key], err_msg=key)


def test_evaluate_and_predict_agree(rng):
    x, y = blobs(rng, 70)
    model = dense_model()
    model.fit(x, y, batch_size=16, epochs=2, verbose=False)
    probs = model.predict(x, batch_size=32)  # 32 does not divide 70
    assert probs.shape == (70, 3) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    loss, accuracy = model.evaluate(x, y, batch_size=32)
    assert accuracy == np.mean(probs.argmax(axis=1) == y)
    expected_loss = CrossEntropy().value(np.eye(3, dtype=np.float32)[y], probs)[0]
    assert loss == pytest.approx(float(expected_loss), rel=1e-5)


def test_evaluate_uses_inference_mode(rng):
    """Dropout scales by (1 - p) and draws no random numbers at inference."""
    model = Model(CrossEntropy(), SGD(0.1))
    model.add(Dropout(0.5, input_shape=(3,)))
    model.add(Softmax())
    x = rng.standard_normal((4, 3)).astype(np.float32)
    state = np.random.get_state()
    probs = model.predict(x)
    assert np.random.get_state()[2] == state[2] and np.array_equal(
        np.random.get_state()[1], state[1]
    )
    np.testing.assert_allclose(probs, model.layers[1].forward(x * np.float32(0.5)))


# --- dtype end to end -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [pytest.param(d, id=np.dtype(d).name) for d in DTYPES])
def test_dtype_is_kept_end_to_end(dtype, rng):
    np.random.seed(1)
    x, y = images(rng, 24, dtype)
    model = conv_model(dtype)
    model.fit(x, y, batch_size=8, epochs=1, verbose=False)
    model.train_on_batch(x[:8], y[:8])
    for layer in model.layers:
        assert layer.forward_outputs.dtype == dtype, layer.name
    for collection in (model.parameters(), model.gradients(), model.state()):
        for key, value in collection.items():
            assert value.dtype == dtype, key
    for layer in model.layers:
        for name in layer.parameter_names:
            assert layer._updaters[name].inertia.dtype == dtype
    assert model.predict(x).dtype == dtype


def test_model_trains_a_conv_net(rng):
    np.random.seed(2)
    x, y = images(rng, 120)
    model = conv_model()
    history = model.fit(x, y, batch_size=20, epochs=8, verbose=False, x_valid=x, y_valid=y)
    assert history[-1]["valid_accuracy"] > 0.8  # chance is 1/3


# --- the first trainable layer skips its input gradient ---------------------------------------


def test_no_input_gradient_is_computed_for_the_first_trainable_layer(rng, monkeypatch):
    model = Model(CrossEntropy(), SGD(0.1), kernel=BACKEND)
    model.add(RandomFlip(input_shape=(2, 4, 4)))
    model.add(Conv2D(2, 3))
    model.add(Flatten())
    model.add(Dense(3))
    model.add(Softmax())

    def forbidden(*args, **kwargs):
        raise AssertionError("grad_inputs of the first Conv2D is never used")

    monkeypatch.setattr(kernels, "grad_inputs", forbidden)
    x, y = rng.standard_normal((5, 2, 4, 4)).astype(np.float32), rng.integers(0, 3, 5)
    model.train_on_batch(x, y)
    assert np.any(model.layers[1].kernels_grad != 0)


# --- fused softmax + cross-entropy ----------------------------------------------------------


class PlainCrossEntropy(Loss):
    """CrossEntropy by another class, so the model takes the unfused path."""

    def value_impl(self, y_gt, y_pred):
        return CrossEntropy().value_impl(y_gt, y_pred)

    def gradient_impl(self, y_gt, y_pred):
        return CrossEntropy().gradient_impl(y_gt, y_pred)


def test_fused_path_equals_the_unfused_one(rng):
    x, y = blobs(rng, 16, np.float64)
    models = []
    for loss in (CrossEntropy(), PlainCrossEntropy()):
        np.random.seed(5)
        model = Model(loss, SGD(0.1), dtype=np.float64)
        model.add(Dense(4, input_shape=(4,)))
        model.add(Softmax())
        models.append(model)
    assert models[0].fused and not models[1].fused
    losses = [m.train_on_batch(x, y)[0] for m in models]
    assert_close("loss", np.array(losses[:1]), np.array(losses[1:]), dtype=np.float64)
    for key, grad in models[0].gradients().items():
        assert_close(key, grad, models[1].gradients()[key], dtype=np.float64)


# --- any object with get_parameter_updater is an optimizer ---------------------------------


class PlainSGD:
    """No nnbench base class: only ``lr`` and ``get_parameter_updater(parameter_shape)``."""

    def __init__(self, lr):
        self.lr = lr

    def get_parameter_updater(self, parameter_shape):
        return lambda parameter, parameter_grad: parameter - self.lr * parameter_grad


class HalfStep:
    """An optimizer without an ``lr`` attribute."""

    def get_parameter_updater(self, parameter_shape):
        return lambda parameter, parameter_grad: parameter - parameter_grad / 2


def test_a_duck_typed_optimizer_trains_exactly_like_sgd(rng):
    x, y = blobs(rng, 40)
    models = []
    for optimizer in (SGD(0.1), PlainSGD(0.1)):
        np.random.seed(7)
        models.append(dense_model(optimizer=optimizer))
        models[-1].fit(x, y, batch_size=8, epochs=2, verbose=False)
    for key, value in models[0].parameters().items():
        np.testing.assert_array_equal(models[1].parameters()[key], value, err_msg=key)


def test_an_optimizer_without_lr_records_none_and_refuses_a_schedule(rng):
    x, y = blobs(rng, 20)
    model = dense_model(optimizer=HalfStep())
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=False)
    assert history[0]["lr"] is None
    with pytest.raises(TypeError, match=r"lr_schedule sets optimizer.lr, but HalfStep has no lr"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=False, lr_schedule=lambda p: 0.1)


# --- save and load --------------------------------------------------------------------------


def test_save_load_round_trip(rng, tmp_path):
    np.random.seed(4)
    x, y = images(rng, 30)
    model = conv_model()
    model.fit(x, y, batch_size=10, epochs=1, verbose=False)
    path = model.save(tmp_path / "model")
    assert path == tmp_path / "model.npz" and path.exists()
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind

    np.random.seed(99)
    restored = conv_model()
    live = restored.parameters()
    restored.load(path)
    for key, value in model.state().items():
        np.testing.assert_array_equal(restored.state()[key], value, err_msg=key)
    assert all(restored.parameters()[k] is v for k, v in live.items())  # loaded in place
    assert "2.BatchNorm.running_var" in restored.state()
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))


def test_load_rejects_another_architecture(rng, tmp_path):
    path = dense_model().save(tmp_path / "dense.npz")
    with pytest.raises(ValueError, match=r"does not match this model's layers: missing .*0.Dense"):
        conv_model().load(path)
    wider = Model(CrossEntropy(), SGD(0.1))
    wider.add(Dense(17, input_shape=(4,)))
    wider.add(ReLU())
    wider.add(Dense(3))
    wider.add(Softmax())
    before = {k: v.copy() for k, v in wider.parameters().items()}
    with pytest.raises(
        ValueError, match=r"0.Dense.weights has shape \(16, 4\), the model expects \(17, 4\)"
    ):
        wider.load(path)
    for key, value in wider.parameters().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize(
    ("name", "written"), [("m", "m.npz"), ("m.npz", "m.npz"), ("m.v2", "m.v2.npz")]
)
def test_save_and_load_resolve_a_path_alike(name, written, tmp_path):
    np.random.seed(8)
    source = dense_model()
    assert source.save(tmp_path / name) == tmp_path / written
    assert sorted(os.listdir(tmp_path)) == [written]
    target = dense_model()
    target.load(tmp_path / name)
    for key, value in source.state().items():
        np.testing.assert_array_equal(target.state()[key], value, err_msg=key)


@pytest.mark.parametrize("method", ["save", "load"])
def test_a_folder_is_not_a_model_path(method, tmp_path):
    (tmp_path / "taken.npz").mkdir()
    model = dense_model()
    with pytest.raises(ValueError, match=re.escape(f"path '{tmp_path}' is a folder")):
        getattr(model, method)(tmp_path)
    with pytest.raises(ValueError, match=r"resolves to '.*taken.npz', which is a folder"):
        getattr(model, method)(tmp_path / "taken")
    assert sorted(os.listdir(tmp_path)) == ["taken.npz"]  # nothing written beside them


def test_a_missing_model_file_is_named_as_resolved(tmp_path):
    expected = re.escape(f"model file '{tmp_path / 'm.npz'}' does not exist")
    with pytest.raises(FileNotFoundError, match=expected):
        dense_model().load(tmp_path / "m")


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def model_arrays(**changes) -> dict[str, np.ndarray]:
    """What ``dense_model().save`` writes, with ``changes`` applied."""
    return {"__nnbench_format__": np.array(1), **dense_model().state(), **changes}


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def flip_byte(data: bytes, index: int) -> bytes:
    corrupt = bytearray(data)
    corrupt[index] ^= 0xFF
    return bytes(corrupt)


NAN_WEIGHTS = np.zeros((16, 4), np.float32)
NAN_WEIGHTS[3, 2] = np.nan
#: id -> (file contents, exception, message after "model file '<path>'")
BAD_MODEL_FILES = {
    "random-bytes": (
        lambda good: np.random.default_rng(0).bytes(300),
        ValueError,
        r" is not an .npz archive: it is truncated, or not a file written by Model.save",
    ),
    "empty": (lambda good: b"", ValueError, r" is not an .npz archive"),
    "truncated": (lambda good: good[: len(good) // 2], ValueError, r" is not an .npz archive"),
    "bit-flip": (lambda good: flip_byte(good, 200), ValueError, r" is corrupt \(.*\)"),
    "npy": (lambda good: npy_bytes(np.zeros(3)), ValueError, r" is a single .npy array"),
    "foreign-npz": (
        lambda good: npz_bytes(weights=np.zeros(3)),
        ValueError,
        r" is not an nnbench model file \(no __nnbench_format__\)",
    ),
    "future-format": (
        lambda good: npz_bytes(**model_arrays(__nnbench_format__=np.array(2))),
        ValueError,
        r" has format version 2; this nnbench reads version 1",
    ),
    "pickled-objects": (
        lambda good: npz_bytes(**model_arrays(**{"0.Dense.weights": np.array([{}], object)})),
        ValueError,
        r" holds Python objects \(pickled data\), which a model file never contains",
    ),
    "non-finite": (
        lambda good: npz_bytes(**model_arrays(**{"0.Dense.weights": NAN_WEIGHTS})),
        ValueError,
        r": 0.Dense.weights must be finite, found 1 NaN or infinite values",
    ),
}


def test_loading_a_file_save_never_writes_names_it_not_a_missing_npz(tmp_path):
    path = tmp_path / "weights.npy"
    path.write_bytes(npy_bytes(np.zeros(3)))
    expected = f"model file '{path}' is not a file written by Model.save: save writes '.npz'"
    with pytest.raises(ValueError, match=re.escape(expected)):
        dense_model().load(path)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [pytest.param(*case, id=name) for name, case in BAD_MODEL_FILES.items()],
)
def test_a_bad_model_file_is_one_clear_error_naming_it(make, error, message, tmp_path):
    good = dense_model().save(tmp_path / "good").read_bytes()
    path = tmp_path / "bad.npz"
    path.write_bytes(make(good))
    model = dense_model()
    before = {k: v.copy() for k, v in model.state().items()}
    with pytest.raises(error, match=re.escape(f"model file '{path}'") + message) as info:
        model.load(path)
    assert "allow_pickle" not in str(info.value)  # never the advice to unpickle
    for key, value in model.state().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_float64_file_loads_into_a_float32_model(rng, tmp_path):
    np.random.seed(6)
    source = dense_model(np.float64)
    path = source.save(tmp_path / "f64.npz")
    target = dense_model(np.float32)
    target.load(path)
    for key, value in source.parameters().items():
        assert target.parameters()[key].dtype == np.float32
        np.testing.assert_array_equal(target.parameters()[key], value.astype(np.float32))


# --- convolution backend selection ----------------------------------------------------------


def _conv_backends(model):
    return [layer.backend.name for layer in model.layers if isinstance(layer, Conv2D)]


@pytest.mark.parametrize("backend", kernels.available())
def test_model_kernel_reaches_every_conv_layer(backend):
    assert _conv_backends(conv_model(kernel=backend)) == [backend, backend]


def test_layer_kernel_overrides_the_model_kernel():
    names = kernels.available()
    model = Model(CrossEntropy(), SGD(0.1), kernel=names[0])
    model.add(Conv2D(2, 3, input_shape=(1, 4, 4), kernel=names[-1]))
    model.add(Conv2D(2, 3))
    assert _conv_backends(model) == [names[-1], names[0]]


def test_environment_variable_picks_the_backend_when_nothing_else_does(monkeypatch):
    name = kernels.available()[-1]
    monkeypatch.setenv(kernels.ENV_VAR, name)
    model = Model(CrossEntropy(), SGD(0.1))
    model.add(Conv2D(2, 3, input_shape=(1, 4, 4)))
    assert _conv_backends(model) == [name]
    monkeypatch.setenv(kernels.ENV_VAR, "no-such-backend")
    with pytest.raises(ValueError, match=r"unknown backend 'no-such-backend'"):
        model.add(Conv2D(2, 3))


def test_a_model_with_generators_trains_the_same_whatever_the_global_state(rng):
    """Initial weights, dropout masks and batch order all come from the given generators:
    numpy's global generator, reseeded in between, changes nothing."""
    x, y = blobs(rng, 200)

    def train(global_seed: int) -> np.ndarray:
        np.random.seed(global_seed)
        model = Model(CrossEntropy(), SGD(0.1), rng=np.random.default_rng(1))
        model.add(Dense(8, input_shape=(x.shape[1],), rng=np.random.default_rng(2)))
        model.add(ReLU())
        model.add(Dropout(0.2, rng=np.random.default_rng(3)))
        model.add(Dense(3, rng=np.random.default_rng(4)))
        model.add(Softmax())
        model.fit(x, y, batch_size=32, epochs=2, verbose=False)
        return np.concatenate([v.ravel() for v in model.parameters().values()])

    np.testing.assert_array_equal(train(0), train(12345))
