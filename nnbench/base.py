"""The three interfaces of the assignment: ``Layer``, ``Loss`` and ``Optimizer``.

A layer is a function of one batched input with optional trainable parameters. Subclasses write
``forward_impl`` and ``backward_impl`` (the math); this class does the bookkeeping the assignment
describes: it stores the last inputs and outputs, validates what comes in through the public
``forward``/``backward``, registers parameters with their gradients and updaters, and applies the
updates in place so every reference to a parameter array stays live.

Shapes: ``input_shape`` and ``output_shape`` never include the batch axis; every array that
flows through ``forward``/``backward`` has the batch axis first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from nnbench import _checks
from nnbench._checks import CallOrderError

#: ``updater(parameter, parameter_grad) -> new value of the parameter``
Updater = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``initializer(shape) -> array of that shape`` (any float dtype; cast to the layer's dtype)
Initializer = Callable[[tuple[int, ...]], np.ndarray]


class Optimizer:
    """Makes one updater per trainable parameter (assignment section 1.4).

    Layers accept any object with a callable ``get_parameter_updater(parameter_shape)``; this
    class is the interface to subclass, not a requirement.
    """

    def get_parameter_updater(self, parameter_shape: tuple[int, ...]) -> Updater:
        """A function ``updater(parameter, parameter_grad) -> new value`` for a parameter of
        shape ``parameter_shape``.

        It is called once per step with the parameter's current value and latest gradient and
        returns the new value; any state (momentum) lives inside the updater.
        """
        raise NotImplementedError


class Loss:
    """A loss ``L(y_gt, y_pred)`` averaged over the batch (assignment section 2.2)."""

    def value(self, y_gt: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """The batch-mean loss, shape (1,), in the dtype of ``y_pred``."""
        self._check(y_gt, y_pred)
        return self.value_impl(y_gt, y_pred)

    def gradient(self, y_gt: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        """dL/dy_pred, the shape of ``y_pred`` (already divided by the batch size)."""
        self._check(y_gt, y_pred)
        return self.gradient_impl(y_gt, y_pred)

    def value_impl(self, y_gt: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient_impl(self, y_gt: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _check(y_gt, y_pred) -> None:
        for name, array in (("y_gt", y_gt), ("y_pred", y_pred)):
            if not isinstance(array, np.ndarray):
                raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
        if y_pred.dtype not in _checks.FLOAT_DTYPES:
            raise TypeError(f"y_pred must have dtype float32 or float64, got {y_pred.dtype}")
        if y_gt.shape != y_pred.shape:
            raise ValueError(
                f"shape mismatch: y_gt has shape {y_gt.shape} but y_pred has shape "
                f"{y_pred.shape}; both must be (n, classes)"
            )
        if y_pred.ndim != 2 or y_pred.shape[0] < 1:
            raise ValueError(f"y_pred must have shape (n, classes) with n >= 1, got {y_pred.shape}")


class Layer:
    """One layer: ``forward_impl``/``backward_impl`` supplied by subclasses.

    Attributes
    ----------
    input_shape, output_shape:
        Shapes of one sample (no batch axis); ``input_shape`` comes from the constructor for
        the first layer of a model and from the previous layer otherwise.
    dtype:
        float32 or float64, set by ``build``; inputs, parameters and gradients all have it.
    is_training:
        Training or inference behaviour (Dropout, BatchNorm, RandomFlip differ).
    forward_inputs, forward_outputs:
        The last batch seen by ``forward`` and what it returned (used by ``backward_impl``).
    parameter_names:
        Names of the trainable parameters, each an attribute holding the array, with its
        gradient in ``<name>_grad``.
    state_names:
        Names of non-trainable arrays saved with the model (BatchNorm's running statistics).
    """

    #: Number of axes of ``input_shape`` the layer accepts; None means any.
    input_rank: int | None = None
    #: How the axes of ``input_shape`` are called, for error messages.
    input_axes = ""
    #: Names of non-trainable arrays that belong to the saved state (see ``Model.save``).
    state_names: tuple[str, ...] = ()

    def __init__(self, input_shape=None):
        self.input_shape = (
            None if input_shape is None else _checks.shape_tuple(input_shape, "input_shape")
        )
        self.output_shape: tuple[int, ...] | None = None
        self.dtype = np.dtype(np.float32)
        self.is_training = True
        self.optimizer: Optimizer | None = None
        self.parameter_names: list[str] = []
        self._updaters: dict[str, Updater] = {}
        self.forward_inputs: np.ndarray | None = None
        self.forward_outputs: np.ndarray | None = None
        self.built = False

    # --- construction --------------------------------------------------------------------

    def build(
        self, optimizer: Optimizer | None = None, prev_layer: Layer | None = None, dtype=None
    ):
        """Fix the input shape and dtype, then let the subclass create its parameters.

        ``prev_layer`` supplies the input shape when the layer got none in its constructor;
        ``optimizer`` is any object with ``get_parameter_updater(parameter_shape)``, or None
        for a layer used only for inference (then ``update_parameters`` refuses to run).
        Subclasses extend this: call ``super().build(...)`` first, then set ``output_shape``
        and call ``add_parameter``.
        """
        if optimizer is not None:
            _checks.optimizer(optimizer, "optimizer")
        self.optimizer = optimizer
        self.dtype = _checks.float_dtype(np.float32 if dtype is None else dtype)
        if prev_layer is not None:
            incoming = prev_layer.output_shape
            if self.input_shape is not None and self.input_shape != incoming:
                raise ValueError(
                    f"input_shape of {self.name} is {self.input_shape} but the previous layer "
                    f"{prev_layer.name} outputs {incoming}"
                )
            self.input_shape = incoming
        if self.input_shape is None:
            raise ValueError(
                f"input_shape of {self.name} is unknown: give input_shape=... to the first "
                "layer of a model"
            )
        if self.input_rank is not None and len(self.input_shape) != self.input_rank:
            raise ValueError(
                f"input_shape of {self.name} must have {self.input_rank} axes "
                f"{self.input_axes}, got {self.input_shape}"
            )
        self.parameter_names = []
        self._updaters = {}
        self.output_shape = self.input_shape
        self.built = True

    @property
    def name(self) -> str:
        return type(self).__name__

    def add_parameter(self, name: str, shape: tuple[int, ...], initializer: Initializer):
        """Create parameter ``name`` (attribute), its zero gradient ``<name>_grad`` and updater."""
        value = np.asarray(initializer(tuple(shape)))
        if value.shape != tuple(shape):
            raise ValueError(
                f"initializer of {self.name}.{name} returned shape {value.shape}, expected {shape}"
            )
        # A fresh C-contiguous array in the layer's dtype: updates happen in place on it.
        parameter = np.array(value, dtype=self.dtype, order="C", copy=True)
        setattr(self, name, parameter)
        setattr(self, f"{name}_grad", np.zeros_like(parameter))
        if self.optimizer is not None:
            self._updaters[name] = self.optimizer.get_parameter_updater(parameter.shape)
        self.parameter_names.append(name)
        return parameter

    def update_parameters(self) -> None:
        """Apply each updater in place: ``parameter[...] = updater(parameter, parameter_grad)``."""
        if self.parameter_names and self.optimizer is None:
            raise CallOrderError(
                f"{self.name} was built without an optimizer; build(optimizer) before updating"
            )
        for name in self.parameter_names:
            parameter = getattr(self, name)
            new_value = self._updaters[name](parameter, getattr(self, f"{name}_grad"))
            if new_value is not parameter:
                parameter[...] = new_value

    # --- forward and backward -------------------------------------------------------------

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """Validate ``inputs`` (n, *input_shape) of the layer's dtype, then ``forward_impl``."""
        self._require_built("forward")
        _checks.float_array(inputs, "inputs", self.dtype)
        _checks.batch_shape(inputs, "inputs", self.input_shape)
        return self._forward(inputs)

    def backward(self, grad_outputs: np.ndarray) -> np.ndarray:
        """Validate ``grad_outputs`` (the shape of the last output), then ``backward_impl``.

        Returns dL/d(inputs) and fills ``<param>_grad`` of every parameter.
        """
        self._require_built("backward")
        if self.forward_outputs is None:
            raise CallOrderError(
                f"{self.name}.backward called before forward: grad_outputs has no forward pass "
                "to differentiate; call forward(inputs) first"
            )
        _checks.float_array(grad_outputs, "grad_outputs", self.dtype)
        if grad_outputs.shape != self.forward_outputs.shape:
            raise ValueError(
                f"grad_outputs must have the shape of the last forward output "
                f"{self.forward_outputs.shape}, got {grad_outputs.shape}"
            )
        return self.backward_impl(grad_outputs)

    def _forward(self, inputs: np.ndarray) -> np.ndarray:
        """The unchecked path the model uses per batch (it validated the whole data set)."""
        self.forward_inputs = inputs
        self.forward_outputs = self.forward_impl(inputs)
        return self.forward_outputs

    def forward_impl(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_impl(self, grad_outputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward_parameters_impl(self, grad_outputs: np.ndarray) -> None:
        """Fill only the parameter gradients (the model's first trainable layer needs no more).

        Layers whose input gradient is expensive (Dense, Conv2D) override this to skip it.
        """
        self.backward_impl(grad_outputs)

    def _require_built(self, method: str) -> None:
        if not self.built:
            raise CallOrderError(
                f"{self.name}.{method} called before build: add the layer to a Model or call "
                "build(optimizer, dtype=...) first"
            )

    def __repr__(self) -> str:
        return f"{self.name}(input_shape={self.input_shape}, output_shape={self.output_shape})"
