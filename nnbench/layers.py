"""The layers of the assignment (sections 2.1 and 4.1) plus a data-augmentation flip.

Every layer keeps its forward and backward side by side. Arrays are batched (batch axis first),
images are NCHW, and everything stays in the layer's dtype: constants are Python scalars (numpy
keeps the array's dtype for those) and random draws are turned into masks, never mixed in as
float64 values. The cached values a backward needs are listed in each class docstring.
"""

from __future__ import annotations

import functools
import math

import numpy as np

import kernels as conv_kernels
from nnbench import _checks
from nnbench.base import Initializer, Layer

__all__ = [
    "BatchNorm",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "Pooling2D",
    "RandomFlip",
    "ReLU",
    "Softmax",
    "he_normal",
    "ones",
    "zeros",
]


# --- initializers ---------------------------------------------------------------------------


def he_normal(fan_in: int) -> Initializer:
    """N(0, sqrt(2 / fan_in)) from numpy's global generator (seed it with ``np.random.seed``)."""
    std = math.sqrt(2.0 / fan_in)
    return lambda shape: np.random.normal(0.0, std, size=shape)


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape)


def _per_channel(vector: np.ndarray) -> np.ndarray:
    """A (d,) vector as (d, 1, 1), to broadcast over the channel axis of (n, d, h, w)."""
    return vector[:, None, None]


@functools.lru_cache(maxsize=64)
def _ones(size: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ones, made once per (size, dtype)."""
    ones = np.ones(size, dtype=dtype)
    ones.flags.writeable = False
    return ones


def _channel_sum(array: np.ndarray) -> np.ndarray:
    """Sum of (n, d, h, w) over n, h, w -> (d,).

    A matrix-vector product with ones runs the long h*w sums in BLAS (blocked, vectorised,
    no temporary): several times faster than ``sum(axis=(0, 2, 3))`` and as accurate.
    """
    n, d = array.shape[:2]
    flat = array.reshape(n, d, -1)
    return (flat @ _ones(flat.shape[2], array.dtype)).sum(axis=0)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over n, h, w of a * b for two (n, d, h, w) arrays -> (d,), without forming a * b."""
    n, d = a.shape[:2]
    rows = a.reshape(n, d, 1, -1)
    columns = b.reshape(n, d, -1, 1)
    return (rows @ columns).reshape(n, d).sum(axis=0)


# --- activations ----------------------------------------------------------------------------


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where x >= 0 (so 1 at x = 0, as section 5.1 defines).

    Backward uses ``forward_inputs``.
    """

    def forward_impl(self, inputs):
        return np.maximum(inputs, 0)

    def backward_impl(self, grad_outputs):
        return grad_outputs * (self.forward_inputs >= 0)


class Softmax(Layer):
    """Row-wise softmax of (n, d), computed as softmax(x - max x) so it never overflows.

    Backward (section 5.2) uses ``forward_outputs``: dx = y * (g - sum(g * y)).
    """

    input_rank = 1
    input_axes = "(d,)"

    def forward_impl(self, inputs):
        exp = inputs - inputs.max(axis=1, keepdims=True)
        np.exp(exp, out=exp)
        exp /= exp.sum(axis=1, keepdims=True)
        return exp

    def backward_impl(self, grad_outputs):
        probs = self.forward_outputs
        weighted = np.einsum("nd,nd->n", grad_outputs, probs)[:, None]
        grad_inputs = grad_outputs - weighted
        grad_inputs *= probs
        return grad_inputs


# --- parametric layers ----------------------------------------------------------------------


class Dense(Layer):
    """y = x W^T + b for x (n, d), W = ``weights`` (units, d), b = ``biases`` (units,).

    weights ~ N(0, sqrt(2/d)), biases = 0 (section 2.1.3). Backward (section 5.3) uses
    ``forward_inputs``.
    """

    input_rank = 1
    input_axes = "(d,)"

    def __init__(self, units: int, input_shape=None):
        super().__init__(input_shape)
        self.units = _checks.positive_int(units, "units")

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        (fan_in,) = self.input_shape
        self.output_shape = (self.units,)
        self.add_parameter("weights", (self.units, fan_in), he_normal(fan_in))
        self.add_parameter("biases", (self.units,), zeros)

    def forward_impl(self, inputs):
        outputs = inputs @ self.weights.T
        outputs += self.biases
        return outputs

    def backward_impl(self, grad_outputs):
        self.backward_parameters_impl(grad_outputs)
        return grad_outputs @ self.weights

    def backward_parameters_impl(self, grad_outputs):
        np.matmul(grad_outputs.T, self.forward_inputs, out=self.weights_grad)
        np.add.reduce(grad_outputs, axis=0, out=self.biases_grad)


class Conv2D(Layer):
    """y = convolve_p(x, K) + b with 'same' padding p = (k - 1) / 2 (sections 4.1.1, 5.7).

    x (n, d, h, w); K = ``kernels`` (c, d, k, k) ~ N(0, sqrt(2 / (d k k))); b = ``biases`` (c,).
    The forward pass and both gradients run on one convolution backend of the ``kernels``
    package: the ``kernel`` argument (a name or a ``kernels.Backend``), else the model's
    ``kernel``, else ``kernels.resolve(None)`` (``$NNBENCH_KERNEL``, then the default). The
    resolved backend is ``self.backend`` (``self.backend.name``), fixed at build time.
    Backward uses ``forward_inputs``.
    """

    input_rank = 3
    input_axes = "(d, h, w)"

    def __init__(self, output_channels: int, kernel_size: int = 3, input_shape=None, kernel=None):
        super().__init__(input_shape)
        self.output_channels = _checks.positive_int(output_channels, "output_channels")
        self.kernel_size = _checks.positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be odd so that 'same' padding (k - 1) / 2 is whole, "
                f"got {kernel_size}"
            )
        if kernel is not None and not isinstance(kernel, (str, conv_kernels.Backend)):
            raise TypeError(
                f"kernel must be a backend name, a kernels.Backend or None, got {kernel!r}"
            )
        self.kernel = kernel
        self.backend: conv_kernels.Backend | None = None

    @property
    def padding(self) -> int:
        return (self.kernel_size - 1) // 2

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        self.backend = _checks.backend(self.kernel, "kernel")
        d, h, w = self.input_shape
        c, k = self.output_channels, self.kernel_size
        self.output_shape = (c, h, w)
        self.add_parameter("kernels", (c, d, k, k), he_normal(d * k * k))
        self.add_parameter("biases", (c,), zeros)

    def forward_impl(self, inputs):
        outputs = conv_kernels.convolve(inputs, self.kernels, self.padding, self.backend)
        if not outputs.flags.writeable:
            outputs = np.array(outputs)
        outputs += _per_channel(self.biases)
        return outputs

    def backward_impl(self, grad_outputs):
        self.backward_parameters_impl(grad_outputs)
        return conv_kernels.grad_inputs(grad_outputs, self.kernels, self.padding, self.backend)

    def backward_parameters_impl(self, grad_outputs):
        self.kernels_grad[...] = conv_kernels.grad_kernels(
            self.forward_inputs, grad_outputs, self.padding, self.backend
        )
        self.biases_grad[...] = _channel_sum(grad_outputs)

    def __repr__(self) -> str:
        backend = self.backend.name if self.backend is not None else self.kernel
        return (
            f"Conv2D({self.output_channels}, kernel_size={self.kernel_size}, "
            f"input_shape={self.input_shape}, backend={backend!r})"
        )


class BatchNorm(Layer):
    """Per-channel batch normalisation of (n, d, h, w) images (section 4.1.3).

    Training: mu, var = mean and biased variance over (n, h, w); xhat = (x - mu) / sqrt(var + eps);
    y = gamma * xhat + beta; running_mean <- m * running_mean + (1 - m) * mu (same for var).
    Inference: the running statistics replace mu and var and are left unchanged.

    Parameters ``gamma`` (ones) and ``beta`` (zeros); state ``running_mean`` (zeros) and
    ``running_var`` (ones), saved with the model but not trained. The forward caches ``xhat``
    (n, d, h, w) and ``inv_std`` (d,) = 1 / sqrt(var + eps) for the backward.
    """

    input_rank = 3
    input_axes = "(d, h, w)"
    state_names = ("running_mean", "running_var")

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5, input_shape=None):
        super().__init__(input_shape)
        self.momentum = _checks.real_in_range(momentum, "momentum", 0.0, 1.0, high_inclusive=True)
        self.eps = _checks.real_in_range(eps, "eps", 0.0, math.inf, low_inclusive=False)
        self.xhat: np.ndarray | None = None
        self.inv_std: np.ndarray | None = None

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        channels = self.input_shape[0]
        self.add_parameter("gamma", (channels,), ones)
        self.add_parameter("beta", (channels,), zeros)
        self.running_mean = np.zeros(channels, dtype=self.dtype)
        self.running_var = np.ones(channels, dtype=self.dtype)

    def forward_impl(self, inputs):
        if not self.is_training:
            self.xhat = None  # the backward recomputes it from forward_inputs if ever needed
            self.inv_std = 1 / np.sqrt(self.running_var + self.eps)
            outputs = inputs - _per_channel(self.running_mean)
            outputs *= _per_channel(self.gamma * self.inv_std)
            outputs += _per_channel(self.beta)
            return outputs
        count = inputs.size // inputs.shape[1]
        mean = _channel_sum(inputs) / count
        xhat = inputs - _per_channel(mean)
        var = _channel_dot(xhat, xhat) / count  # biased: divided by the count, not count - 1
        self.inv_std = 1 / np.sqrt(var + self.eps)
        xhat *= _per_channel(self.inv_std)
        self.xhat = xhat
        m = self.momentum
        self.running_mean *= m
        self.running_mean += (1 - m) * mean
        self.running_var *= m
        self.running_var += (1 - m) * var
        outputs = xhat * _per_channel(self.gamma)
        outputs += _per_channel(self.beta)
        return outputs

    def backward_impl(self, grad_outputs):
        xhat = self._parameter_grads(grad_outputs)
        scale = _per_channel(self.gamma * self.inv_std)
        if self.xhat is None:  # inference: mu and var were constants
            return grad_outputs * scale
        # Full backward through mu(x) and var(x), means over (n, h, w):
        # dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)),
        # where mean(g) = beta_grad / count and mean(g * xhat) = gamma_grad / count.
        count = grad_outputs.size // grad_outputs.shape[1]
        grad_inputs = xhat * _per_channel(self.gamma_grad / -count)
        grad_inputs += grad_outputs
        grad_inputs -= _per_channel(self.beta_grad / count)
        grad_inputs *= scale
        return grad_inputs

    def backward_parameters_impl(self, grad_outputs):
        self._parameter_grads(grad_outputs)

    def _parameter_grads(self, grad_outputs) -> np.ndarray:
        """Fill gamma_grad = sum(g * xhat) and beta_grad = sum(g); return xhat."""
        xhat = self.xhat
        if xhat is None:
            xhat = self.forward_inputs - _per_channel(self.running_mean)
            xhat *= _per_channel(self.inv_std)
        self.gamma_grad[...] = _channel_dot(grad_outputs, xhat)
        self.beta_grad[...] = _channel_sum(grad_outputs)
        return xhat


class Pooling2D(Layer):
    """Non-overlapping p x p pooling of (n, d, h, w) with p dividing h and w (section 4.1.2).

    Both modes reduce in two stages over strided views, never looping over samples: first
    across the p columns of every window, giving (n, d, h, w/p), then across its p rows,
    giving (n, d, h/p, w/p). That touches each input once with plain elementwise ufuncs,
    several times faster than reducing a (n, d, h/p, p, w/p, p) reshape over axes (3, 5).

    ``pool_mode="max"`` routes the gradient to exactly one position per window: the first
    maximum in row-major window order (ties do not double the gradient). It caches
    ``col_argmax`` (n, d, h, w/p), the winning column in each row of a window, and
    ``row_argmax`` (n, d, h/p, w/p), the winning row (small unsigned ints). Taking the first
    maximum within each row, then the first row whose maximum wins, is the row-major first
    maximum. ``pool_mode="avg"`` spreads the gradient evenly and caches nothing.
    """

    input_rank = 3
    input_axes = "(d, h, w)"
    modes = ("max", "avg")

    def __init__(self, pool_size: int = 2, pool_mode: str = "max", input_shape=None):
        super().__init__(input_shape)
        self.pool_size = _checks.positive_int(pool_size, "pool_size")
        if pool_mode not in self.modes:
            raise ValueError(f"pool_mode must be one of {self.modes}, got {pool_mode!r}")
        self.pool_mode = pool_mode
        self.col_argmax: np.ndarray | None = None
        self.row_argmax: np.ndarray | None = None

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        d, h, w = self.input_shape
        p = self.pool_size
        if h % p or w % p:
            raise ValueError(
                f"pool_size={p} must divide the image height and width, got input_shape "
                f"{self.input_shape} (h={h}, w={w})"
            )
        self.output_shape = (d, h // p, w // p)

    def _columns(self, array):
        """The p column views array[..., j::p], each (n, d, h, w/p)."""
        return [array[..., j :: self.pool_size] for j in range(self.pool_size)]

    def _rows(self, array):
        """The p row views array[:, :, i::p], each (n, d, h/p, ...)."""
        return [array[:, :, i :: self.pool_size] for i in range(self.pool_size)]

    def forward_impl(self, inputs):
        if self.pool_mode == "avg":
            self.col_argmax = self.row_argmax = None
            outputs = _sum_of(self._rows(_sum_of(self._columns(inputs))))
            outputs *= 1 / self.pool_size**2
            return outputs
        column_max, self.col_argmax = _first_max(self._columns(inputs))
        outputs, self.row_argmax = _first_max(self._rows(column_max))
        return outputs

    def backward_impl(self, grad_outputs):
        n, d, h, w = self.forward_inputs.shape
        p = self.pool_size
        if self.pool_mode == "avg":
            spread = grad_outputs * (1 / p**2)
            return np.repeat(np.repeat(spread, p, axis=2), p, axis=3)
        grad_rows = np.empty((n, d, h, w // p), dtype=grad_outputs.dtype)
        _route(grad_outputs, self.row_argmax, self._rows(grad_rows))
        grad_inputs = np.empty((n, d, h, w), dtype=grad_outputs.dtype)
        _route(grad_rows, self.col_argmax, self._columns(grad_inputs))
        return grad_inputs


def _sum_of(views: list[np.ndarray]) -> np.ndarray:
    total = views[0] + views[1] if len(views) > 1 else views[0].copy()
    for view in views[2:]:
        total += view
    return total


def _first_max(views: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise maximum of ``views`` and the index of the first view that attains it."""
    best = views[0]
    index = np.zeros(best.shape, dtype=np.min_scalar_type(len(views) - 1))
    for k, candidate in enumerate(views[1:], start=1):
        better = np.greater(candidate, best)  # strict: an earlier maximum keeps ties
        best = np.maximum(best, candidate)
        if k == 1 and index.dtype == np.uint8:
            index = better.view(np.uint8)  # 1 where the second view won, else 0
        else:
            np.putmask(index, better, k)
    return (best.copy() if len(views) == 1 else best), index


def _route(grad: np.ndarray, index: np.ndarray, targets: list[np.ndarray]) -> None:
    """targets[k][...] = grad where index == k, else 0."""
    if len(targets) == 2:
        np.multiply(grad, index, out=targets[1])  # index is 0 or 1
        np.subtract(grad, targets[1], out=targets[0])  # exact: grad - grad or grad - 0
        return
    for k, target in enumerate(targets):
        np.multiply(grad, index == k, out=target)


# --- shape and regularisation layers ------------------------------------------------------


class Flatten(Layer):
    """(n, d1, ..., dk) -> (n, d1 * ... * dk) in C order (section 4.1.4)."""

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        self.output_shape = (math.prod(self.input_shape),)

    def forward_impl(self, inputs):
        return inputs.reshape(inputs.shape[0], -1)

    def backward_impl(self, grad_outputs):
        return grad_outputs.reshape(self.forward_inputs.shape)


class Dropout(Layer):
    """Training: y = M * x with M = [u > p], u from ONE ``np.random.uniform(size=x.shape)``
    call, no rescaling; inference: y = (1 - p) * x (section 4.1.5).

    Caches the boolean ``mask`` (training forward) or None (inference forward); the backward
    follows whichever the last forward used.
    """

    def __init__(self, p: float = 0.5, input_shape=None):
        super().__init__(input_shape)
        self.p = _checks.real_in_range(p, "p", 0.0, 1.0)
        self.mask: np.ndarray | None = None

    def forward_impl(self, inputs):
        if not self.is_training:
            self.mask = None
            return inputs * (1 - self.p)
        self.mask = np.random.uniform(size=inputs.shape) > self.p
        return inputs * self.mask

    def backward_impl(self, grad_outputs):
        if self.mask is None:
            return grad_outputs * (1 - self.p)
        return grad_outputs * self.mask


class RandomFlip(Layer):
    """Data augmentation: while training, mirror each image of (n, d, h, w) left-right with
    probability ``probability`` (drawn with one ``np.random.uniform(size=n)`` call); identity
    at inference.

    Caches ``flipped`` (n,) bool (None after an inference forward); the backward mirrors the
    gradient of the flipped images back.
    """

    input_rank = 3
    input_axes = "(d, h, w)"

    def __init__(self, probability: float = 0.5, input_shape=None):
        super().__init__(input_shape)
        self.probability = _checks.real_in_range(
            probability, "probability", 0.0, 1.0, high_inclusive=True
        )
        self.flipped: np.ndarray | None = None

    def forward_impl(self, inputs):
        if not self.is_training:
            self.flipped = None
            return inputs
        self.flipped = np.random.uniform(size=inputs.shape[0]) < self.probability
        return self._mirror(inputs)

    def backward_impl(self, grad_outputs):
        if self.flipped is None:
            return grad_outputs
        return self._mirror(grad_outputs)

    def _mirror(self, array: np.ndarray) -> np.ndarray:
        return np.where(self.flipped[:, None, None, None], array[..., ::-1], array)
