"""A sequential model: add layers, fit with mini-batch SGD, evaluate, predict, save and load.

The model is the front door for whole data sets: ``fit``, ``evaluate`` and ``predict`` check
once that inputs have the model's dtype (no silent casts: a float64 array given to a float32
model is a ``TypeError``), the input shape, and that they are finite; labels are checked
against the sample count and the number of classes (one-hot rows must be one-hot, class
indices in range). Per batch it then uses the layers' unchecked path.

When the loss is ``CrossEntropy`` and the last layer is ``Softmax``, training and evaluation
use ``softmax_cross_entropy`` on the logits (stable log-sum-exp; same loss values as the
unfused path). Training is wrapped in ``np.errstate`` so that overflow shows up as a
non-finite loss, which stops ``fit`` with ``NonFiniteLossError`` naming the epoch and step.
"""

from __future__ import annotations

import io
import math
import os
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from numbers import Real
from pathlib import Path

import numpy as np
from tqdm import tqdm

import kernels as conv_kernels
from nnbench import _checks
from nnbench._io import atomic_write_bytes
from nnbench.base import Layer, Loss, Optimizer
from nnbench.layers import Softmax
from nnbench.losses import CrossEntropy, softmax_cross_entropy

__all__ = ["History", "Model", "NonFiniteLossError"]

#: Marker array stored in every saved model; its value is the file-format version.
FORMAT_KEY = "__nnbench_format__"
FORMAT_VERSION = 1


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; ``epoch`` and ``step`` are 1-based."""

    def __init__(self, loss: float, epoch: int | None, step: int, steps: int, lr: float | None):
        where = f"epoch {epoch}, step {step} of {steps}" if epoch else f"step {step}"
        at_lr = "" if lr is None else f" (lr={lr:g})"
        super().__init__(
            f"training loss became {loss} at {where}{at_lr}; parameters were not updated "
            "by this step. A smaller learning rate (or a schedule with warm-up) usually helps."
        )
        self.loss, self.epoch, self.step, self.lr = loss, epoch, step, lr


class History(list):
    """What ``fit`` returns: one dict per epoch, oldest first.

    Keys of each record:

    - ``epoch`` (1-based), ``steps`` (optimizer steps taken in it), ``samples`` (seen in it);
    - ``elapsed_seconds``: wall-clock seconds since ``fit`` started, at the end of the epoch
      (training and validation included);
    - ``train_loss``, ``train_accuracy``: running means over the epoch's batches, measured in
      training mode (dropout and flips active) before each batch's update;
    - ``valid_loss``, ``valid_accuracy``: on the validation set in inference mode, or None;
    - ``lr``: the learning rate of the epoch's last step (None when the optimizer has no
      numeric ``lr`` attribute);
    - ``stopped_early``: True on the last record when ``time_budget`` ran out in that epoch.

    Records are plain dicts of Python numbers, so ``json.dumps(list(history))`` works.
    """

    @property
    def stopped_early(self) -> bool:
        return bool(self) and bool(self[-1]["stopped_early"])


class Model:
    """A sequence of layers trained with ``loss`` and ``optimizer``.

    ``kernel`` is the convolution backend (name or ``kernels.Backend``) given to every layer
    that takes one (``Conv2D``) and has none of its own; None leaves them to
    ``kernels.resolve`` (``$NNBENCH_KERNEL``, then the default). ``dtype`` (float32 or
    float64) is the dtype of every parameter, activation and gradient. ``optimizer`` is any
    object with ``get_parameter_updater(parameter_shape)`` (see ``nnbench.base.Optimizer``).
    ``rng`` (a ``numpy.random.Generator``) shuffles the batches; by default numpy's global
    generator does. Layers that draw random numbers take their own ``rng`` the same way.
    """

    def __init__(self, loss: Loss, optimizer: Optimizer, kernel=None, dtype=np.float32, rng=None):
        if not isinstance(loss, Loss):
            raise TypeError(f"loss must be an nnbench Loss, got {type(loss).__name__}")
        _checks.optimizer(optimizer, "optimizer")
        if kernel is not None:
            if not isinstance(kernel, (str, conv_kernels.Backend)):
                raise TypeError(f"kernel must be a backend name or None, got {kernel!r}")
            _checks.backend(kernel, "kernel")  # unknown names fail here, listing the available ones
        self.loss = loss
        self.optimizer = optimizer
        self.kernel = kernel
        self.dtype = _checks.float_dtype(dtype)
        self.rng = _checks.random_source(rng)
        self.layers: list[Layer] = []

    # --- building ---------------------------------------------------------------------------

    def add(self, layer: Layer) -> None:
        """Append ``layer`` and build it; its input shape is the previous layer's output."""
        if not isinstance(layer, Layer):
            raise TypeError(f"layer must be an nnbench Layer, got {type(layer).__name__}")
        if any(existing is layer for existing in self.layers):
            raise ValueError(f"layer {layer!r} is already in the model; create a new one")
        previous = self.layers[-1] if self.layers else None
        if previous is None and layer.input_shape is None:
            raise ValueError(
                f"the first layer ({layer.name}) needs input_shape=... (one sample, no batch axis)"
            )
        if getattr(layer, "kernel", False) is None and self.kernel is not None:
            layer.kernel = self.kernel
        layer.build(self.optimizer, prev_layer=previous, dtype=self.dtype)
        self.layers.append(layer)

    @property
    def input_shape(self) -> tuple[int, ...]:
        self._require_layers()
        return self.layers[0].input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        self._require_layers()
        return self.layers[-1].output_shape

    @property
    def fused(self) -> bool:
        """Whether the loss is computed by ``softmax_cross_entropy`` on the logits."""
        return (
            isinstance(self.loss, CrossEntropy)
            and bool(self.layers)
            and isinstance(self.layers[-1], Softmax)
        )

    def parameters(self) -> dict[str, np.ndarray]:
        """Trainable parameters by key ``<index>.<Layer>.<name>`` (the live arrays)."""
        return {key: getattr(layer, name) for key, layer, name in self._named(trainable=True)}

    def gradients(self) -> dict[str, np.ndarray]:
        """The latest gradient of each parameter, keyed like ``parameters()``."""
        return {
            key: getattr(layer, f"{name}_grad") for key, layer, name in self._named(trainable=True)
        }

    def state(self) -> dict[str, np.ndarray]:
        """Everything ``save`` writes: parameters and non-trainable state (running statistics)."""
        return {key: getattr(layer, name) for key, layer, name in self._named(trainable=False)}

    def _named(self, trainable: bool) -> Iterator[tuple[str, Layer, str]]:
        for index, layer in enumerate(self.layers):
            names = list(layer.parameter_names)
            if not trainable:
                names += list(layer.state_names)
            for name in names:
                yield f"{index}.{layer.name}.{name}", layer, name

    # --- training ---------------------------------------------------------------------------

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        batch_size: int,
        epochs: int,
        shuffle: bool = True,
        verbose: bool = True,
        x_valid: np.ndarray | None = None,
        y_valid: np.ndarray | None = None,
        lr_schedule: Callable[[float], float] | None = None,
        time_budget: float | None = None,
        eval_batch_size: int | None = None,
    ) -> History:
        """Mini-batch training; returns a ``History`` with one record per epoch.

        ``y_train`` is one-hot rows (n, classes) or integer class labels (n,) in
        [0, classes). Batches are drawn from a fresh ``permutation`` of the model's ``rng``
        (numpy's global generator unless ``Model(rng=...)`` gave one) each epoch
        when ``shuffle``. ``lr_schedule`` maps training progress (step index / total steps,
        in [0, 1)) to the learning rate, set as ``optimizer.lr`` before each step.
        ``time_budget`` (seconds): training stops after the step during which the budget ran
        out; the partial epoch is recorded (validated if validation data is given) with
        ``stopped_early=True``. ``verbose`` shows a progress bar per epoch with the running
        loss and accuracy, and prints each epoch's metrics. Raises ``NonFiniteLossError`` (a
        ``FloatingPointError``) naming the epoch and step when the loss becomes NaN or
        infinite.
        """
        self._require_layers()
        x_train = self._check_inputs(x_train, "x_train")
        y_train, labels = self._check_labels(y_train, "y_train", len(x_train))
        batch_size = _checks.positive_int(batch_size, "batch_size")
        epochs = _checks.positive_int(epochs, "epochs")
        if (x_valid is None) != (y_valid is None):
            raise ValueError("x_valid and y_valid must be given together (or both left None)")
        if x_valid is not None:
            x_valid = self._check_inputs(x_valid, "x_valid")
            y_valid, _ = self._check_labels(y_valid, "y_valid", len(x_valid))
        if lr_schedule is not None and not callable(lr_schedule):
            raise TypeError(f"lr_schedule must be callable(progress) -> lr, got {lr_schedule!r}")
        if lr_schedule is not None and not hasattr(self.optimizer, "lr"):
            raise TypeError(
                f"lr_schedule sets optimizer.lr, but {type(self.optimizer).__name__} has no lr "
                "attribute"
            )
        if time_budget is not None:
            time_budget = _checks.real_in_range(time_budget, "time_budget", 0.0, math.inf)
        eval_batch_size = _checks.positive_int(
            max(batch_size, 256) if eval_batch_size is None else eval_batch_size, "eval_batch_size"
        )

        history = History()
        start = time.perf_counter()
        deadline = None if time_budget is None else start + time_budget
        for epoch in range(1, epochs + 1):
            record = self._train_epoch(
                x_train,
                y_train,
                labels,
                batch_size=batch_size,
                shuffle=shuffle,
                epoch=epoch,
                epochs=epochs,
                lr_schedule=lr_schedule,
                deadline=deadline,
                verbose=verbose,
            )
            if x_valid is not None:
                record["valid_loss"], record["valid_accuracy"] = self._evaluate(
                    x_valid, y_valid, eval_batch_size
                )
            record["elapsed_seconds"] = time.perf_counter() - start
            history.append(record)
            if verbose:
                tqdm.write(_describe(record, epochs))
            if record["stopped_early"]:
                break
        self._set_training(False)
        return history

    def _train_epoch(
        self, x, y, labels, *, batch_size, shuffle, epoch, epochs, lr_schedule, deadline, verbose
    ) -> dict:
        """One pass over the training set (or up to the deadline); the epoch's history record."""
        self._set_training(True)
        n = len(x)
        steps = math.ceil(n / batch_size)
        order = (np.random if self.rng is None else self.rng).permutation(n) if shuffle else None
        loss_sum, correct, seen, stopped = 0.0, 0, 0, False
        bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", disable=not verbose)
        try:
            for step in range(1, steps + 1):
                if lr_schedule is not None:
                    self.optimizer.lr = lr_schedule(
                        ((epoch - 1) * steps + step - 1) / (epochs * steps)
                    )
                batch = slice((step - 1) * batch_size, step * batch_size)
                if order is not None:
                    batch = order[batch]
                loss, probs = self._train_step(x[batch], y[batch])
                if not math.isfinite(loss):
                    raise NonFiniteLossError(loss, epoch, step, steps, self._lr())
                size = len(probs)
                loss_sum += loss * size
                correct += int(np.count_nonzero(probs.argmax(axis=1) == labels[batch]))
                seen += size
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False
                )
                if deadline is not None and time.perf_counter() >= deadline:
                    stopped = True
                    break
        finally:
            bar.close()
        return {
            "epoch": epoch,
            "steps": step,
            "samples": seen,
            "elapsed_seconds": None,  # filled in by fit, after validation
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "valid_loss": None,
            "valid_accuracy": None,
            "lr": self._lr(),
            "stopped_early": stopped,
        }

    def train_on_batch(self, x_batch: np.ndarray, y_batch: np.ndarray) -> tuple[float, float]:
        """One optimizer step on one batch; returns its (loss, accuracy) before the update.

        Afterwards every ``<param>_grad`` holds this batch's gradient.
        """
        self._require_layers()
        x_batch = self._check_inputs(x_batch, "x_batch")
        y_batch, labels = self._check_labels(y_batch, "y_batch", len(x_batch))
        self._set_training(True)
        loss, probs = self._train_step(x_batch, y_batch)
        if not math.isfinite(loss):
            raise NonFiniteLossError(loss, None, 1, 1, self._lr())
        return loss, float(np.mean(probs.argmax(axis=1) == labels))

    def _train_step(self, x_batch: np.ndarray, y_batch: np.ndarray) -> tuple[float, np.ndarray]:
        """Forward, loss, backward and update for one validated batch; (loss, outputs).

        Stops before the backward when the loss is not finite. Layers in front of the first
        trainable layer need no backward, and that layer needs no input gradient.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            body = self.layers[:-1] if self.fused else self.layers
            outputs = x_batch
            for layer in body:
                outputs = layer._forward(outputs)
            if self.fused:
                softmax = self.layers[-1]
                loss, probs, grad = softmax_cross_entropy(y_batch, outputs, self.loss.eps)
                softmax.forward_inputs, softmax.forward_outputs = outputs, probs
            else:
                probs = outputs
                loss = self.loss.value_impl(y_batch, outputs)
                grad = self.loss.gradient_impl(y_batch, outputs)
            loss = float(loss[0])
            if not math.isfinite(loss):
                return loss, probs
            trainable = [i for i, layer in enumerate(body) if layer.parameter_names]
            if trainable:
                first = trainable[0]
                for layer in reversed(body[first + 1 :]):
                    grad = layer.backward_impl(grad)
                body[first].backward_parameters_impl(grad)
                for index in trainable:
                    body[index].update_parameters()
        return loss, probs

    # --- inference --------------------------------------------------------------------------

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
        """(mean loss, accuracy) over ``x`` in inference mode; ``y`` one-hot or integer labels."""
        self._require_layers()
        x = self._check_inputs(x, "x")
        y_one_hot, _ = self._check_labels(y, "y", len(x))
        return self._evaluate(x, y_one_hot, _checks.positive_int(batch_size, "batch_size"))

    def _evaluate(self, x, y_one_hot, batch_size) -> tuple[float, float]:
        self._set_training(False)
        labels = y_one_hot.argmax(axis=1)
        loss_sum, correct = 0.0, 0
        body = self.layers[:-1] if self.fused else self.layers
        for start in range(0, len(x), batch_size):
            batch = slice(start, start + batch_size)
            outputs = x[batch]
            for layer in body:
                outputs = layer._forward(outputs)
            if self.fused:
                loss, probs, _ = softmax_cross_entropy(
                    y_one_hot[batch], outputs, self.loss.eps, with_grad=False
                )
            else:
                probs = outputs
                loss = self.loss.value_impl(y_one_hot[batch], outputs)
            loss_sum += float(loss[0]) * len(outputs)
            correct += int(np.count_nonzero(probs.argmax(axis=1) == labels[batch]))
        return loss_sum / len(x), correct / len(x)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Outputs of the last layer (class probabilities after Softmax) in inference mode."""
        self._require_layers()
        x = self._check_inputs(x, "x")
        batch_size = _checks.positive_int(batch_size, "batch_size")
        self._set_training(False)
        result = np.empty((len(x), *self.output_shape), dtype=self.dtype)
        for start in range(0, len(x), batch_size):
            outputs = x[start : start + batch_size]
            for layer in self.layers:
                outputs = layer._forward(outputs)
            result[start : start + batch_size] = outputs
        return result

    # --- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write parameters and running statistics to ``path`` atomically; returns the path
        written. ``.npz`` is appended to a path that does not end in it (``load`` resolves
        the path the same way); a folder is refused."""
        self._require_layers()
        path = _model_file_path(path)
        arrays = {FORMAT_KEY: np.array(FORMAT_VERSION), **self.state()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return atomic_write_bytes(path, buffer.getvalue())

    def load(self, path: str | os.PathLike) -> None:
        """Read a file written by ``save`` into this model's arrays (in place).

        ``path`` resolves as in ``save`` ("m" reads "m.npz"). Names and shapes must match this
        model's layers exactly and every value must be finite; nothing is changed unless all of
        them do. Float arrays of the other float dtype are converted to the model's dtype. Any
        problem raises one error naming the file (``FileNotFoundError`` when it is missing,
        ``ValueError``/``TypeError`` otherwise); pickled data is never loaded.
        """
        self._require_layers()
        given, path = path, _model_file_path(path)
        if not path.exists() and Path(given).is_file():  # "m.npy": a file, but not one of save's
            raise ValueError(
                f"model file {str(given)!r} is not a file written by Model.save: save writes "
                f"'.npz' files, and {str(given)!r} resolves to {str(path)!r}, which does not exist"
            )
        where = f"model file {str(path)!r}"
        targets = self.state()
        stored = _read_npz(path, where)
        version = stored.pop(FORMAT_KEY, None)
        if version is None:
            raise ValueError(f"{where} is not an nnbench model file (no {FORMAT_KEY})")
        if version.shape != () or version.dtype.kind not in "iu" or version != FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {version.tolist()!r}; this nnbench reads version "
                f"{FORMAT_VERSION}"
            )
        missing = sorted(set(targets) - set(stored))
        unexpected = sorted(set(stored) - set(targets))
        if missing or unexpected:
            raise ValueError(
                f"{where} does not match this model's layers: missing {missing}, "
                f"unexpected {unexpected}"
            )
        for name, target in targets.items():
            array = stored[name]
            if array.shape != target.shape:
                raise ValueError(
                    f"{where}: {name} has shape {array.shape}, the model expects {target.shape}"
                )
            if array.dtype not in _checks.FLOAT_DTYPES:
                raise TypeError(f"{where}: {name} has dtype {array.dtype}, not a float")
            _checks.finite(array, f"{where}: {name}")
        for name, target in targets.items():
            np.copyto(target, stored[name], casting="same_kind")

    # --- checks -----------------------------------------------------------------------------

    def _require_layers(self) -> None:
        if not self.layers:
            raise _checks.CallOrderError("the model has no layers: add(layer) first")

    def _check_inputs(self, x, name: str) -> np.ndarray:
        _checks.float_array(x, name, self.dtype)
        _checks.batch_shape(x, name, self.input_shape)
        _checks.finite(x, name)
        return x

    def _check_labels(self, y, name: str, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(one-hot labels in the model's dtype, class index per sample) from ``y``."""
        if not isinstance(y, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(y).__name__}")
        if len(self.output_shape) != 1:
            raise ValueError(
                f"labels need a model whose output is (n, classes), but it outputs "
                f"{('n', *self.output_shape)}"
            )
        (classes,) = self.output_shape
        if y.ndim == 0 or len(y) != count:
            raise ValueError(
                f"{name} must hold one label per sample ({count}), got shape {y.shape}"
            )
        if y.ndim == 1:
            if not np.issubdtype(y.dtype, np.integer):
                raise TypeError(
                    f"{name} with shape (n,) must hold integer class labels, got dtype {y.dtype}"
                )
            if y.min() < 0 or y.max() >= classes:
                raise ValueError(
                    f"{name} class labels must be in [0, {classes}), got values in "
                    f"[{y.min()}, {y.max()}]"
                )
            one_hot = np.zeros((count, classes), dtype=self.dtype)
            one_hot[np.arange(count), y] = 1
            return one_hot, y
        if y.shape != (count, classes):
            raise ValueError(
                f"{name} must be one-hot with shape ({count}, {classes}) to match the model's "
                f"output {('n', classes)}, got shape {y.shape}"
            )
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
            raise TypeError(f"{name} must be numeric, got dtype {y.dtype}")
        one_hot = y.astype(self.dtype, copy=False)
        _checks.finite(one_hot, name)
        # A row of zeros would train on loss 0 and a negative entry on a negative loss.
        is_one_hot = ((one_hot == 0) | (one_hot == 1)).all(axis=1) & (one_hot.sum(axis=1) == 1)
        if not is_one_hot.all():
            bad = np.flatnonzero(~is_one_hot)
            raise ValueError(
                f"{name} rows must be one-hot (entries 0 or 1, exactly one 1 per row), but "
                f"{len(bad)} of {count} are not; the first is row {bad[0]}: "
                f"{np.array2string(y[bad[0]], threshold=12, edgeitems=3)}"
            )
        return one_hot, one_hot.argmax(axis=1)

    def _lr(self) -> float | None:
        """The optimizer's current learning rate, or None if it has no numeric ``lr``."""
        lr = getattr(self.optimizer, "lr", None)
        return float(lr) if isinstance(lr, Real) else None

    def _set_training(self, flag: bool) -> None:
        for layer in self.layers:
            layer.is_training = flag

    def __repr__(self) -> str:
        lines = [
            f"Model(loss={type(self.loss).__name__}, optimizer={self.optimizer!r}, dtype={self.dtype})"
        ]
        lines += [f"  {i}: {layer!r}" for i, layer in enumerate(self.layers)]
        return "\n".join(lines)


def _model_file_path(path: str | os.PathLike) -> Path:
    """Where ``save`` writes and ``load`` reads for ``path``: ``.npz`` appended unless it is
    already the suffix. A folder (given, or at the resolved path) is a ``ValueError``."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    given = Path(path)
    if given.is_dir():
        raise ValueError(
            f"path {str(given)!r} is a folder; give a file name such as "
            f"{str(given / 'model.npz')!r}"
        )
    resolved = given if given.suffix == ".npz" else given.with_name(given.name + ".npz")
    if resolved.is_dir():
        raise ValueError(f"path {str(given)!r} resolves to {str(resolved)!r}, which is a folder")
    return resolved


def _read_npz(path: Path, where: str) -> dict[str, np.ndarray]:
    """Every array of the .npz archive at ``path``, never unpickling anything; one error
    starting with ``where`` if the file is missing, not an archive, truncated or corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{where} does not exist (save and load add .npz to a path without it)"
        ) from None
    if data.startswith(b"\x93NUMPY"):
        raise ValueError(f"{where} is a single .npy array, not an .npz written by Model.save")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise ValueError(
            f"{where} is not an .npz archive: it is truncated, or not a file written by Model.save"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:
        # numpy refuses object arrays with advice to allow pickles: wrong for a file of unknown
        # origin, so say what is wrong instead.
        if "allow_pickle" in str(exc):
            raise ValueError(
                f"{where} holds Python objects (pickled data), which a model file never "
                "contains; they are not loaded"
            ) from None
        problem = str(exc)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        problem = str(exc) or type(exc).__name__
    raise ValueError(f"{where} is corrupt ({problem}); save the model again")


def _describe(record: dict, epochs: int) -> str:
    text = (
        f"epoch {record['epoch']}/{epochs}: train loss {record['train_loss']:.4f} "
        f"acc {record['train_accuracy']:.4f}"
    )
    if record["valid_loss"] is not None:
        text += f" | valid loss {record['valid_loss']:.4f} acc {record['valid_accuracy']:.4f}"
    if record["lr"] is not None:
        text += f" | lr {record['lr']:.4g}"
    text += f" | {record['elapsed_seconds']:.1f} s"
    if record["stopped_early"]:
        text += f" | time budget reached after {record['steps']} steps"
    return text
