"""The layers of the assignment (sections 2.1 and 4.1) plus a data-augmentation flip.

Every layer keeps its forward and backward side by side. Arrays are batched (batch axis first),
images are NCHW, and everything stays in the layer's dtype: constants are Python scalars (numpy
keeps the array's dtype for those) and random draws are turned into masks, never mixed in as
float64 values. The cached values a backward needs are listed in each class docstring.

numpy runs elementwise work on one thread. The passes over whole activations (ReLU, BatchNorm,
pooling, the convolution bias, the flip) therefore go through ``_batched``, which cuts the batch
into slices run side by side on the thread budget of ``kernels.threads`` (the BLAS limit in
force). Each image is computed exactly as it would be alone, so the results do not depend on
the number of threads. The benchmark suite's training steps (``tests/benchmarks``) show what
this buys on a given machine.
"""

from __future__ import annotations

import functools
import math

import numpy as np

import kernels as conv_kernels
from kernels import threads
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


def he_normal(fan_in: int, rng=None) -> Initializer:
    """N(0, sqrt(2 / fan_in)) from ``rng``, by default numpy's global generator (seed it with
    ``np.random.seed``)."""
    std = math.sqrt(2.0 / fan_in)
    return lambda shape: _random(rng).normal(0.0, std, size=shape)


def _random(rng):
    """Where a layer draws from: its own generator, else numpy's global one (``np.random``),
    which the assignment's Dropout contract and its tests rely on."""
    return np.random if rng is None else rng


def zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, ...]) -> np.ndarray:
    return np.ones(shape)


def _per_channel(vector: np.ndarray) -> np.ndarray:
    """A (d,) vector as (d, 1, 1), to broadcast over the channel axis of (n, d, h, w)."""
    return vector[:, None, None]


def _flat(array: np.ndarray) -> np.ndarray:
    """(n, ...) as (n, rest): a view of a C-contiguous array (outputs are made so), else a
    copy (fine for an operand, never for an ``out``)."""
    return array.reshape(len(array), -1)


def _channel_row(vector: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """A (d,) per-channel vector laid out as one flattened (d, h, w) image: each value
    repeated h * w times, to broadcast along the rows of an (n, d * h * w) ``_flat`` view.

    numpy then runs one contiguous loop per image where the (d, 1, 1) broadcast over
    (n, d, h, w) runs n * d loops of h * w values each: 1.3x to 1.7x faster on the recipe's
    BatchNorm and bias passes (most at 8x8 images), with bit-identical results.
    """
    return np.repeat(vector, math.prod(image_shape[1:]))


@functools.lru_cache(maxsize=64)
def _constant(value: float, size: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``size`` copies of ``value``, made once per (value, size, dtype)."""
    vector = np.full(size, value, dtype=dtype)
    vector.flags.writeable = False
    return vector


def _batched(function, *operands, out, elements=None, min_rows=1):
    """``function(*operands, out=out)`` computed in slices of the batch axis, in parallel.

    ``out`` is an array or a tuple of arrays, all with the batch axis first. An operand with
    at least as many axes as ``out`` (its first) has the batch axis first and is sliced with
    it; one with fewer axes (per-channel constants such as (d, 1, 1), scalars) is passed whole.
    ``function`` takes the operands positionally and ``out=`` like a ufunc. Returns ``out``.
    The work is counted as ``out``'s elements unless ``elements`` says otherwise (a reduction
    reads far more than it writes); every slice holds at least ``min_rows`` rows.
    """
    outs = out if isinstance(out, tuple) else (out,)
    n, ndim = len(outs[0]), outs[0].ndim

    def has_batch_axis(operand) -> bool:
        if not isinstance(operand, np.ndarray) or operand.ndim < ndim:
            return False
        if len(operand) != n:
            raise ValueError(f"operand of shape {operand.shape} has no batch of {n} first")
        return True

    for operand in operands:
        has_batch_axis(operand)  # raises on a batch of the wrong length

    def body(part: slice) -> None:
        args = [op[part] if has_batch_axis(op) else op for op in operands]
        sliced = tuple(o[part] for o in outs)
        function(*args, out=sliced if isinstance(out, tuple) else sliced[0])

    work = outs[0].size if elements is None else elements
    threads.over_batch(body, n, work, min_rows=min_rows)
    return out


def _affine(x, scale, shift, out):
    """out = x * scale + shift."""
    np.multiply(x, scale, out=out)
    np.add(out, shift, out=out)


def _channel_sum(array: np.ndarray) -> np.ndarray:
    """Sum of (n, d, h, w) over n, h, w -> (d,).

    A matrix-vector product with ones runs the long h*w sums in BLAS (blocked, vectorised,
    no temporary): several times faster than ``sum(axis=(0, 2, 3))`` and as accurate. The
    per-image sums are computed in parallel (``_per_image_sums``) and then added in batch order.
    """
    n, d = array.shape[:2]
    flat = array.reshape(n, d, -1)
    ones = _constant(1, flat.shape[2], array.dtype)
    per_image = np.empty((n, d), array.dtype)
    return _per_image_sums(flat, ones, out=per_image, elements=array.size)


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over n, h, w of a * b for two (n, d, h, w) arrays -> (d,), without forming a * b."""
    n, d = a.shape[:2]
    rows = a.reshape(n, d, 1, -1)
    columns = b.reshape(n, d, -1, 1)
    per_image = np.empty((n, d, 1, 1), a.dtype)
    return _per_image_sums(rows, columns, out=per_image, elements=a.size + b.size)


def _per_image_sums(a, b, out, elements):
    """``np.matmul(a, b, out=out)``, a stacked product with one output per image and channel
    (``out`` (n, d, ...)), in slices of the batch, then those outputs added up in batch order ->
    (d,). Its work is the ``elements`` it reads, not the n * d values it writes. A slice of b
    images has b * d outputs, and numpy holds the GIL through a stacked product with at most
    ``threads.NUMPY_GIL_OUTPUTS`` of them, which would run the slices one at a time: each slice
    has more (``threads.gil_free_rows``), unless the whole batch has fewer."""
    n, d = out.shape[:2]
    _batched(np.matmul, a, b, out=out, elements=elements, min_rows=threads.gil_free_rows(d))
    return out.reshape(n, d).sum(axis=0)


# --- activations ----------------------------------------------------------------------------


class ReLU(Layer):
    """y = max(x, 0); dy/dx = 1 where x >= 0 (so 1 at x = 0, as section 5.1 defines).

    The forward takes the maximum with a row of zeros along ``_flat`` rows rather than with
    the scalar 0: numpy's loop for two contiguous operands is about 1.8x faster than the
    one for a scalar here, with the same result (NaN propagates either way).
    Backward uses ``forward_inputs``.
    """

    def forward_impl(self, inputs):
        outputs = np.empty(inputs.shape, inputs.dtype)
        zeros = _constant(0, outputs[0].size, outputs.dtype)
        _batched(np.maximum, _flat(inputs), zeros, out=_flat(outputs))
        return outputs

    def backward_impl(self, grad_outputs):
        out = np.empty_like(grad_outputs)
        return _batched(_relu_grad, grad_outputs, self.forward_inputs, out=out)


def _relu_grad(grad_outputs, inputs, out):
    np.multiply(grad_outputs, inputs >= 0, out=out)


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

    def __init__(self, units: int, input_shape=None, rng=None):
        super().__init__(input_shape)
        self.units = _checks.positive_int(units, "units")
        self.rng = _checks.random_source(rng)

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        (fan_in,) = self.input_shape
        self.output_shape = (self.units,)
        self.add_parameter("weights", (self.units, fan_in), he_normal(fan_in, self.rng))
        self.add_parameter("biases", (self.units,), zeros)

    def forward_impl(self, inputs):
        outputs = threads.matmul(inputs, self.weights.T)
        outputs += self.biases
        return outputs

    def backward_impl(self, grad_outputs):
        self.backward_parameters_impl(grad_outputs)
        return threads.matmul(grad_outputs, self.weights)

    def backward_parameters_impl(self, grad_outputs):
        threads.matmul(grad_outputs.T, self.forward_inputs, out=self.weights_grad)
        np.add.reduce(grad_outputs, axis=0, out=self.biases_grad)


class Conv2D(Layer):
    """y = convolve_p(x, K) + b with 'same' padding p = (k - 1) / 2 (sections 4.1.1, 5.7).

    x (n, d, h, w); K = ``kernels`` (c, d, k, k) ~ N(0, sqrt(2 / (d k k))); b = ``biases`` (c,).
    The forward pass and both gradients go to one convolution backend of the ``kernels``
    package (which may compute a pass by another route: its ``ROUTES``, e.g. winograd's weight
    gradient): the ``kernel`` argument (a name or a ``kernels.Backend``), else the model's
    ``kernel``, else ``kernels.resolve(None)`` (``$NNBENCH_KERNEL``, then the default). The
    resolved backend is ``self.backend`` (``self.backend.name``), fixed at build time.
    Backward uses ``forward_inputs``.
    """

    input_rank = 3
    input_axes = "(d, h, w)"

    def __init__(
        self, output_channels: int, kernel_size: int = 3, input_shape=None, kernel=None, rng=None
    ):
        super().__init__(input_shape)
        self.rng = _checks.random_source(rng)
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
        self.add_parameter("kernels", (c, d, k, k), he_normal(d * k * k, self.rng))
        self.add_parameter("biases", (c,), zeros)

    def forward_impl(self, inputs):
        outputs = conv_kernels.convolve(inputs, self.kernels, self.padding, self.backend)
        if not (outputs.flags.writeable and outputs.flags.c_contiguous):
            outputs = np.array(outputs, order="C")
        flat = _flat(outputs)
        _batched(np.add, flat, _channel_row(self.biases, outputs.shape[1:]), out=flat)
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
    Inference: the running statistics replace mu and var and are left unchanged. Training on
    one value per channel (n * h * w = 1) is a ``ValueError``, as in torch.

    Parameters ``gamma`` (ones) and ``beta`` (zeros); state ``running_mean`` (zeros) and
    ``running_var`` (ones), saved with the model but not trained. The forward caches
    ``centered`` = x - mu (n, d, h, w) and ``inv_std`` (d,) = 1 / sqrt(var + eps) for the
    backward, not xhat = centered * inv_std: y = centered * (gamma * inv_std) + beta needs no
    xhat, and the backward folds inv_std into its per-channel constants, which saves a pass
    over the activations.
    """

    input_rank = 3
    input_axes = "(d, h, w)"
    state_names = ("running_mean", "running_var")

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5, input_shape=None):
        super().__init__(input_shape)
        self.momentum = _checks.real_in_range(momentum, "momentum", 0.0, 1.0, high_inclusive=True)
        self.eps = _checks.real_in_range(eps, "eps", 0.0, math.inf, low_inclusive=False)
        self.centered: np.ndarray | None = None
        self.inv_std: np.ndarray | None = None

    def build(self, *args, **kwargs):
        super().build(*args, **kwargs)
        channels = self.input_shape[0]
        self.add_parameter("gamma", (channels,), ones)
        self.add_parameter("beta", (channels,), zeros)
        self.running_mean = np.zeros(channels, dtype=self.dtype)
        self.running_var = np.ones(channels, dtype=self.dtype)

    def forward_impl(self, inputs):
        image = inputs.shape[1:]
        if not self.is_training:
            self.centered = None  # the backward recomputes it from forward_inputs if needed
            self.inv_std = 1 / np.sqrt(self.running_var + self.eps)
            outputs = np.empty(inputs.shape, inputs.dtype)
            flat = _flat(outputs)
            _batched(np.subtract, _flat(inputs), _channel_row(self.running_mean, image), out=flat)
            scale = _channel_row(self.gamma * self.inv_std, image)
            _batched(_affine, flat, scale, _channel_row(self.beta, image), out=flat)
            return outputs
        count = inputs.size // inputs.shape[1]
        if count == 1:
            # The batch statistics of one value are the value itself: the output would be beta
            # whatever the input, with zero gradient. torch refuses this too.
            raise ValueError(
                f"BatchNorm in training mode needs more than one value per channel, got inputs "
                f"of shape {inputs.shape} (n * h * w = 1); use a larger batch, or inference mode"
            )
        mean = _channel_sum(inputs) / count
        centered = np.empty(inputs.shape, inputs.dtype)
        _batched(np.subtract, _flat(inputs), _channel_row(mean, image), out=_flat(centered))
        var = _channel_dot(centered, centered) / count  # biased: divided by the count
        self.inv_std = 1 / np.sqrt(var + self.eps)
        self.centered = centered
        m = self.momentum
        self.running_mean *= m
        self.running_mean += (1 - m) * mean
        self.running_var *= m
        self.running_var += (1 - m) * var
        scale = _channel_row(self.gamma * self.inv_std, image)
        outputs = np.empty(inputs.shape, inputs.dtype)
        _batched(
            _affine, _flat(centered), scale, _channel_row(self.beta, image), out=_flat(outputs)
        )
        return outputs

    def backward_impl(self, grad_outputs):
        centered = self._parameter_grads(grad_outputs)
        image = grad_outputs.shape[1:]
        scale = _channel_row(self.gamma * self.inv_std, image)
        out = np.empty(grad_outputs.shape, grad_outputs.dtype)
        if self.centered is None:  # inference: mu and var were constants
            _batched(np.multiply, _flat(grad_outputs), scale, out=_flat(out))
            return out
        # Full backward through mu(x) and var(x), means over (n, h, w):
        # dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)),
        # where mean(g) = beta_grad / count, mean(g * xhat) = gamma_grad / count and
        # xhat = centered * inv_std.
        count = grad_outputs.size // grad_outputs.shape[1]
        mean_g = _channel_row(self.beta_grad / count, image)
        minus_k = _channel_row(self.inv_std * self.gamma_grad / -count, image)
        operands = _flat(grad_outputs), _flat(centered), mean_g, minus_k, scale
        _batched(_batchnorm_grad, *operands, out=_flat(out))
        return out

    def backward_parameters_impl(self, grad_outputs):
        self._parameter_grads(grad_outputs)

    def _parameter_grads(self, grad_outputs) -> np.ndarray:
        """Fill gamma_grad = sum(g * xhat) = inv_std * sum(g * centered) and beta_grad =
        sum(g); return centered."""
        centered = self.centered
        if centered is None:
            centered = self.forward_inputs - _per_channel(self.running_mean)
        self.gamma_grad[...] = _channel_dot(grad_outputs, centered) * self.inv_std
        self.beta_grad[...] = _channel_sum(grad_outputs)
        return centered


def _batchnorm_grad(grad_outputs, centered, mean_g, minus_k, scale, out):
    """out = scale * (g - mean_g + centered * minus_k), per channel."""
    np.multiply(centered, minus_k, out=out)
    out += grad_outputs
    out -= mean_g
    out *= scale


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

    def forward_impl(self, inputs):
        n, d, h, w = inputs.shape
        p = self.pool_size
        outputs = np.empty((n, d, h // p, w // p), dtype=inputs.dtype)
        if self.pool_mode == "avg":
            self.col_argmax = self.row_argmax = None
            return _batched(self._average, inputs, out=outputs)
        index = np.min_scalar_type(p - 1)
        self.col_argmax = np.empty((n, d, h, w // p), dtype=index)
        self.row_argmax = np.empty(outputs.shape, dtype=index)
        _batched(self._maximum, inputs, out=(outputs, self.col_argmax, self.row_argmax))
        return outputs

    def backward_impl(self, grad_outputs):
        grad_inputs = np.empty(self.forward_inputs.shape, dtype=grad_outputs.dtype)
        if self.pool_mode == "avg":
            return _batched(self._spread, grad_outputs, out=grad_inputs)
        argmax = (self.col_argmax, self.row_argmax)
        return _batched(self._unpool_max, grad_outputs, *argmax, out=grad_inputs)

    # Each helper works on a slice of the batch and writes into ``out``.

    def _columns(self, array):
        """The p column views array[..., j::p], each (n, d, h, w/p)."""
        return [array[..., j :: self.pool_size] for j in range(self.pool_size)]

    def _rows(self, array):
        """The p row views array[:, :, i::p], each (n, d, h/p, ...)."""
        return [array[:, :, i :: self.pool_size] for i in range(self.pool_size)]

    def _average(self, inputs, out):
        columns = self._columns(inputs)
        column_sum = np.empty(columns[0].shape, dtype=inputs.dtype)
        _sum_of(columns, column_sum)
        _sum_of(self._rows(column_sum), out)
        out *= 1 / self.pool_size**2

    def _maximum(self, inputs, out):
        outputs, col_argmax, row_argmax = out
        column_max = np.empty(col_argmax.shape, dtype=inputs.dtype)
        _first_max(self._columns(inputs), column_max, col_argmax)
        _first_max(self._rows(column_max), outputs, row_argmax)

    def _spread(self, grad_outputs, out):
        share = grad_outputs * (1 / self.pool_size**2)
        for row in self._rows(out):
            for target in self._columns(row):
                np.copyto(target, share)

    def _unpool_max(self, grad_outputs, col_argmax, row_argmax, out):
        grad_rows = np.empty(col_argmax.shape, dtype=grad_outputs.dtype)
        _route(grad_outputs, row_argmax, self._rows(grad_rows))
        _route(grad_rows, col_argmax, self._columns(out))


def _sum_of(views: list[np.ndarray], out: np.ndarray) -> None:
    """out = the elementwise sum of ``views``, added in order."""
    if len(views) == 1:
        np.copyto(out, views[0])
        return
    np.add(views[0], views[1], out=out)
    for view in views[2:]:
        out += view


def _first_max(views: list[np.ndarray], best: np.ndarray, index: np.ndarray) -> None:
    """best = elementwise maximum of ``views``; index = the first view that attains it."""
    if len(views) == 1:
        np.copyto(best, views[0])
        index.fill(0)
        return
    # strict comparisons: an earlier maximum keeps ties
    if index.dtype == np.uint8:
        np.greater(views[1], views[0], out=index.view(np.bool_))  # 1 where the second view won
    else:
        np.copyto(index, np.greater(views[1], views[0]))
    np.maximum(views[0], views[1], out=best)
    for k, candidate in enumerate(views[2:], start=2):
        better = np.greater(candidate, best)
        np.maximum(best, candidate, out=best)
        np.putmask(index, better, k)


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
    call, no rescaling; inference: y = (1 - p) * x (section 4.1.5). ``rng``: draw from this
    generator instead of numpy's global one (same single ``uniform`` call).

    Caches the boolean ``mask`` (training forward) or None (inference forward); the backward
    follows whichever the last forward used.
    """

    def __init__(self, p: float = 0.5, input_shape=None, rng=None):
        super().__init__(input_shape)
        self.p = _checks.real_in_range(p, "p", 0.0, 1.0)
        self.rng = _checks.random_source(rng)
        self.mask: np.ndarray | None = None

    def forward_impl(self, inputs):
        if not self.is_training:
            self.mask = None
            return inputs * (1 - self.p)
        self.mask = _random(self.rng).uniform(size=inputs.shape) > self.p
        return inputs * self.mask

    def backward_impl(self, grad_outputs):
        if self.mask is None:
            return grad_outputs * (1 - self.p)
        return grad_outputs * self.mask


class RandomFlip(Layer):
    """Data augmentation: while training, mirror each image of (n, d, h, w) left-right with
    probability ``probability`` (drawn with one ``np.random.uniform(size=n)`` call, or from
    ``rng``); identity at inference.

    Caches ``flipped`` (n,) bool (None after an inference forward); the backward mirrors the
    gradient of the flipped images back.
    """

    input_rank = 3
    input_axes = "(d, h, w)"

    def __init__(self, probability: float = 0.5, input_shape=None, rng=None):
        super().__init__(input_shape)
        self.probability = _checks.real_in_range(
            probability, "probability", 0.0, 1.0, high_inclusive=True
        )
        self.rng = _checks.random_source(rng)
        self.flipped: np.ndarray | None = None

    def forward_impl(self, inputs):
        if not self.is_training:
            self.flipped = None
            return inputs
        self.flipped = _random(self.rng).uniform(size=inputs.shape[0]) < self.probability
        return self._mirror(inputs)

    def backward_impl(self, grad_outputs):
        if self.flipped is None:
            return grad_outputs
        return self._mirror(grad_outputs)

    def _mirror(self, array: np.ndarray) -> np.ndarray:
        flipped = self.flipped[:, None, None, None]
        return _batched(_mirror_where, flipped, array, out=np.empty_like(array))


def _mirror_where(flipped, array, out):
    """out = array with the rows of the images where ``flipped`` (n, 1, 1, 1) reversed.

    A plain copy, then the flipped images again, mirrored: 3-4x faster than two masked
    copies (``np.copyto(..., where=)`` tests the broadcast mask at every element).
    """
    np.copyto(out, array)
    images = np.flatnonzero(flipped)
    out[images] = array[images, ..., ::-1]
