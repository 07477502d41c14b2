"""Benchmark cases and timed calls: the one source of truth for ``tests/benchmarks`` and for the
report's quick mode (``run_quick``).

What is timed
    ``Case`` is one convolution shape: inputs (n, d, h, w), kernels (c, d, kh, kw), padding p,
    dtype. Each case is timed for every available backend and every pass of ``PASSES``:

    - ``forward``       ``kernels.convolve(x, K, p)``
    - ``grad_inputs``   ``kernels.grad_inputs(dY, K, p)``
    - ``grad_kernels``  ``kernels.grad_kernels(x, dY, p)``

    All three are the same multiply-adds arranged differently (assignment section 5.7), so each
    is credited with the forward's FLOPs, ``2 * n * c * oh * ow * d * kh * kw``. On top of the
    single calls, ``layer_call`` times one ``Conv2D`` forward+backward (3x those FLOPs) and
    ``train_step_call`` one optimizer step of a whole recipe model.

The case lists
    ``recipe_cases``       the exact Conv2D layers of a CIFAR-10 recipe at its training batch
    ``kernel_size_sweep``  k = 1..11, 'same' padding, 32x32 images, at two channel widths: where
                           the FFT backend overtakes the direct ones
    ``channel_sweep``      3x3 on 16x16 images, d = c from 8 to 128: how GEMM efficiency grows
                           with the reduction length
    ``batch_sweep``        3x3, 32 -> 32 channels on 16x16 images, n from 1 to 256
    ``quick_cases``        a handful of the above for the report's two-minute default

    The sweeps are laid out so no two cases share an id: every (id, pass) is one group.

Correctness
    ``make_call`` returns the timed function and a ``check`` that compares a result with a
    float64 torch autograd reference of the same inputs (computed after timing, lazily). The
    error bound is ``ERROR_FACTOR[dtype] * sqrt(K) * max|reference|`` with K the reduction
    length of the pass (d*kh*kw, c*kh*kw or n*oh*ow): rounding errors of a length-K sum grow
    like sqrt(K) ulps of the largest partial sums; a backend off by a real mistake (a wrong flip,
    a wrong padding, a dropped channel, a half-precision shortcut) lands orders of magnitude
    beyond it, so a fast wrong backend fails its benchmark.

Memory
    ``peak_memory_bytes`` runs a call once more, untimed, and reports the peak resident memory it
    added: on Linux the kernel's high-water mark (``VmHWM``, reset through
    ``/proc/self/clear_refs``) minus the resident size before the call, after ``malloc_trim``
    returned freed heap pages, so numpy's and torch's allocations are both seen (tracemalloc
    does not see torch's allocator). Elsewhere it falls back to tracemalloc (numpy only).
    ``memory_method()`` says which one is in use. The result array counts as allocated, and so
    do the buffers a backend reuses across calls (im2col's column matrix, loop's padded copy):
    ``kernels.release_scratch()`` drops them first, so the number is what a cold call needs.
    FFT plan caches and BLAS work areas kept by the libraries themselves are not counted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import math
import statistics
import sys
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

import kernels
from nnbench import machine

__all__ = [
    "BATCH_SIZES",
    "CHANNEL_WIDTHS",
    "ERROR_FACTOR",
    "KERNEL_SIZES",
    "PASSES",
    "STEP_MODELS",
    "SUITES",
    "Case",
    "Operands",
    "StepModel",
    "TimedCall",
    "Unsupported",
    "all_cases",
    "batch_sweep",
    "case_seed",
    "channel_sweep",
    "choose_rounds",
    "extra_info",
    "kernel_size_sweep",
    "layer_call",
    "make_call",
    "memory_method",
    "operands",
    "peak_memory_bytes",
    "quick_cases",
    "recipe_cases",
    "rng_for",
    "run_quick",
    "sgemm_call",
    "sgemm_gflops",
    "thread_counts",
    "time_call",
    "train_step_call",
    "unsupported_reason",
]

SUITES = ("recipe", "kernel_size", "channels", "batch")
PASSES = ("forward", "grad_inputs", "grad_kernels")
DTYPES = ("float32", "float64")

KERNEL_SIZES = (1, 3, 5, 7, 9, 11)
#: (n, d = c) of the kernel-size sweep on 32x32 images: the narrow width the issue names, and a
#: wider one at a smaller batch (same order of FLOPs) where FFT's per-frequency products win more.
KERNEL_SWEEP_WIDTHS = ((32, 32), (8, 64))
CHANNEL_WIDTHS = (8, 16, 32, 64, 128)  # d = c, at [32, d, 16, 16] with 3x3
BATCH_SIZES = (1, 4, 16, 64, 256)  # n, at [n, 32, 16, 16] -> 32 with 3x3

#: Error bound per element: ERROR_FACTOR[dtype] * sqrt(K) * max|reference|. 64 ulps per sqrt(K)
#: leaves room for the blocked BLAS sums, the FFT's log-depth butterflies and float32 rounding
#: of the operands, while an O(1) relative mistake (or float16 arithmetic) still fails for every
#: reduction length used here (K <= 131072 gives a bound of 2.8e-3 relative in float32).
ERROR_FACTOR = {
    "float32": 64 * float(np.finfo(np.float32).eps),
    "float64": 64 * float(np.finfo(np.float64).eps),
}


# --- cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One convolution to time: ``convolve(inputs input_shape, kernels kernel_shape, padding)``.

    suite: one of ``SUITES``; label: short readable name within the suite ("fast/conv2", "k7/c32");
    input_shape (n, d, h, w); kernel_shape (c, d, kh, kw); padding p on each side; dtype name.
    """

    suite: str
    label: str
    input_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    padding: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "kernel_shape", tuple(int(v) for v in self.kernel_shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        if self.suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {self.suite!r}")
        if len(self.input_shape) != 4 or len(self.kernel_shape) != 4:
            raise ValueError(
                f"input_shape (n, d, h, w) and kernel_shape (c, d, kh, kw) need 4 entries each, "
                f"got {self.input_shape} and {self.kernel_shape}"
            )
        if min(self.input_shape + self.kernel_shape) < 1:
            raise ValueError(
                f"shapes must be positive, got {self.input_shape}, {self.kernel_shape}"
            )
        if self.input_shape[1] != self.kernel_shape[1]:
            raise ValueError(
                f"channel mismatch: input_shape has d={self.input_shape[1]}, kernel_shape "
                f"d={self.kernel_shape[1]}"
            )
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        if min(self.output_shape[2:]) < 1:
            raise ValueError(f"empty output {self.output_shape} for case {self.id}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return kernels.output_shape(self.input_shape, self.kernel_shape, self.padding)

    @property
    def flops(self) -> int:
        """Multiplies plus adds of one convolve call: 2 * n * c * oh * ow * d * kh * kw."""
        n, c, oh, ow = self.output_shape
        _, d, kh, kw = self.kernel_shape
        return 2 * n * c * oh * ow * d * kh * kw

    @property
    def id(self) -> str:
        """``k3p1[128,16,16,16]->32``: kernel size, padding, input shape, output channels."""
        _, _, kh, kw = self.kernel_shape
        size = f"k{kh}" if kh == kw else f"k{kh}x{kw}"
        text = (
            f"{size}p{self.padding}[{','.join(map(str, self.input_shape))}]->{self.kernel_shape[0]}"
        )
        return text if self.dtype == "float32" else f"{text}-{self.dtype}"

    def reduction_length(self, pass_: str) -> int:
        """How many products each output element of ``pass_`` sums (at most)."""
        n, c, oh, ow = self.output_shape
        _, d, kh, kw = self.kernel_shape
        lengths = {"forward": d * kh * kw, "grad_inputs": c * kh * kw, "grad_kernels": n * oh * ow}
        return lengths[_check_pass(pass_)]

    @property
    def same_padding(self) -> bool:
        """Whether ``Conv2D`` (square odd kernel, p = (k - 1) / 2) computes exactly this case."""
        _, _, kh, kw = self.kernel_shape
        return kh == kw and kh % 2 == 1 and self.padding == (kh - 1) // 2

    def as_dict(self) -> dict:
        return {
            "suite": self.suite,
            "label": self.label,
            "input_shape": list(self.input_shape),
            "kernel_shape": list(self.kernel_shape),
            "padding": self.padding,
            "dtype": self.dtype,
        }


def recipe_cases(preset: str = "fast") -> list[Case]:
    """The Conv2D layers of the CIFAR-10 ``preset`` at its training batch size, in model order.

    Layers of identical shape are listed once, labelled with all their names ("best/conv1+2").
    """
    from nnbench import recipes

    recipe = recipes.cifar10_recipe(preset)
    # The shapes do not depend on the backend; any available one builds the model.
    model = recipes.build_cifar10_model(kernel=kernels.available()[0], preset=preset)
    shapes = recipes.conv_layer_shapes(model, recipe.batch_size)
    by_id: dict[str, tuple[list[int], dict]] = {}
    for index, shape in enumerate(shapes, start=1):
        key = Case("recipe", "", shape["input"], shape["kernels"], shape["padding"]).id
        by_id.setdefault(key, ([], shape))[0].append(index)
    return [
        Case(
            "recipe",
            f"{preset}/conv" + "+".join(map(str, numbers)),
            shape["input"],
            shape["kernels"],
            shape["padding"],
        )
        for numbers, shape in by_id.values()
    ]


def kernel_size_sweep(sizes: Iterable[int] = KERNEL_SIZES) -> list[Case]:
    """k x k kernels with 'same' padding on 32x32 images, at each width of KERNEL_SWEEP_WIDTHS."""
    return [
        Case(
            "kernel_size", f"k{k}/c{width}", (n, width, 32, 32), (width, width, k, k), (k - 1) // 2
        )
        for n, width in KERNEL_SWEEP_WIDTHS
        for k in sizes
    ]


def channel_sweep(widths: Iterable[int] = CHANNEL_WIDTHS) -> list[Case]:
    """3x3 'same' convolutions of [32, d, 16, 16] to d channels."""
    return [Case("channels", f"c{d}", (32, d, 16, 16), (d, d, 3, 3), 1) for d in widths]


def batch_sweep(batches: Iterable[int] = BATCH_SIZES) -> list[Case]:
    """3x3 'same' convolutions of [n, 32, 16, 16] to 32 channels."""
    return [Case("batch", f"n{n}", (n, 32, 16, 16), (32, 32, 3, 3), 1) for n in batches]


def all_cases() -> list[Case]:
    """Every case of the benchmark suite; ``ValueError`` if two share an id."""
    cases = recipe_cases() + kernel_size_sweep() + channel_sweep() + batch_sweep()
    seen: dict[str, Case] = {}
    for case in cases:
        if case.id in seen:
            raise ValueError(f"case id {case.id} is in both {seen[case.id].label} and {case.label}")
        seen[case.id] = case
    return cases


def quick_cases() -> list[Case]:
    """A handful for the report's two-minute default: the recipe layers, and k = 3 and 7 of the
    narrow kernel-size sweep (below and above the FFT crossover; k = 11 alone would take the
    loop backend about a minute)."""
    narrow = KERNEL_SWEEP_WIDTHS[0][1]
    sweep = [case for case in kernel_size_sweep((3, 7)) if case.kernel_shape[0] == narrow]
    return recipe_cases() + sweep


# --- timed calls ----------------------------------------------------------------------------


class Unsupported(Exception):
    """The backend declared the case out of its reach; the message is its reason."""


@dataclass
class TimedCall:
    """A call to time (``fn``, no arguments) with its check and its FLOPs.

    ``check(result)`` raises ``AssertionError`` naming what is wrong, else returns the largest
    absolute error against the float64 torch reference (None when nothing is compared).
    """

    fn: Callable[[], object]
    check: Callable[[object], float | None]
    flops: int

    def __call__(self):
        return self.fn()


def rng_for(key: str) -> np.random.Generator:
    """A generator seeded from ``key`` (a test or record id): reproducible, different per case."""
    return np.random.default_rng(zlib.crc32(key.encode()))


def unsupported_reason(backend: str | None, case: Case) -> str | None:
    """The backend's reason for not computing ``case`` (its ``supports``), or None.

    ``backend=None`` means the one ``kernels.resolve`` picks (``$NNBENCH_KERNEL`` or the default).
    """
    impl = kernels.resolve(backend)
    reason = impl.supports(case.input_shape, case.kernel_shape, case.padding, np.dtype(case.dtype))
    return reason or None


def make_call(backend: str, case: Case, pass_: str, rng: np.random.Generator | int):
    """(fn, check) for one ``pass_`` of ``case`` on ``backend``.

    The operands are drawn here, outside the timed function, from ``rng``; an int is a seed,
    and then the operands and their reference are shared by every call with the same case and
    seed (so each backend and pass of a group sees the same inputs and the float64 reference is
    computed once). ``fn()`` makes exactly one call of the public ``kernels.convolve`` /
    ``grad_inputs`` / ``grad_kernels`` and returns its result. ``check(result)`` compares it
    with the float64 torch reference (see the module docstring), asserts the backend left its
    operands untouched, and returns the largest absolute error. Raises ``Unsupported`` with the
    backend's reason.
    """
    _check_pass(pass_)
    impl = kernels.get(backend)
    reason = unsupported_reason(backend, case)
    if reason:
        raise Unsupported(reason)
    ops = operands(case, rng)
    if pass_ == "forward":
        fn = functools.partial(kernels.convolve, ops.x, ops.kernels, case.padding, backend=impl)
        index, expected_shape = 0, case.output_shape
    elif pass_ == "grad_inputs":
        fn = functools.partial(
            kernels.grad_inputs, ops.grad_outputs, ops.kernels, case.padding, backend=impl
        )
        index, expected_shape = 1, case.input_shape
    else:
        fn = functools.partial(
            kernels.grad_kernels, ops.x, ops.grad_outputs, case.padding, backend=impl
        )
        index, expected_shape = 2, case.kernel_shape
    name = f"{backend} {pass_} {case.id}"

    def check(result) -> float:
        ops.assert_unchanged(name)
        return _compare(
            name,
            result,
            lambda: ops.reference()[index],
            expected_shape,
            case.dtype,
            case.reduction_length(pass_),
        )

    return fn, check


def layer_call(backend: str, case: Case, rng: np.random.Generator | int) -> TimedCall:
    """One ``Conv2D`` forward + backward on ``backend`` (a callable ``TimedCall``).

    The case must have 'same' padding and a square odd kernel (what ``Conv2D`` computes);
    ``rng`` as in ``make_call``. ``fn()`` returns (outputs, grad_inputs); ``check`` compares
    them and the layer's ``kernels_grad`` and ``biases_grad`` with the torch reference.
    FLOPs: three convolutions.
    """
    from nnbench import Conv2D

    if not case.same_padding:
        raise ValueError(f"Conv2D computes 'same' padding with square odd kernels, not {case.id}")
    reason = unsupported_reason(backend, case)
    if reason:
        raise Unsupported(reason)
    n, d, h, w = case.input_shape
    c, _, k, _ = case.kernel_shape
    layer = Conv2D(c, kernel_size=k, input_shape=(d, h, w), kernel=backend)
    layer.build(None, dtype=case.dtype)
    ops = operands(case, rng)
    layer.kernels[...] = ops.kernels
    layer.biases[...] = np.linspace(-1.0, 1.0, c)
    x, g = ops.x, ops.grad_outputs

    def fn():
        outputs = layer.forward(x)
        return outputs, layer.backward(g)

    name = f"{backend} layer {case.id}"

    def check(result) -> float:
        outputs, grad_in = result
        ops.assert_unchanged(name)
        ref_out, ref_in, ref_k = ops.reference()
        _, _, oh, ow = case.output_shape
        errors = [
            _compare(
                f"{name} outputs",
                outputs,
                lambda: ref_out + layer.biases[:, None, None],
                case.output_shape,
                case.dtype,
                case.reduction_length("forward"),
            ),
            _compare(
                f"{name} grad_inputs",
                grad_in,
                lambda: ref_in,
                case.input_shape,
                case.dtype,
                case.reduction_length("grad_inputs"),
            ),
            _compare(
                f"{name} kernels_grad",
                layer.kernels_grad,
                lambda: ref_k,
                case.kernel_shape,
                case.dtype,
                case.reduction_length("grad_kernels"),
            ),
            _compare(
                f"{name} biases_grad",
                layer.biases_grad,
                lambda: g.astype(np.float64).sum(axis=(0, 2, 3)),
                (c,),
                case.dtype,
                n * oh * ow,
            ),
        ]
        return max(errors)

    return TimedCall(fn, check, 3 * case.flops)


@dataclass(frozen=True)
class StepModel:
    """A recipe model to time one training step of.

    ``build(kernel)`` returns the untrained model; ``uses_kernel`` says whether it has Conv2D
    layers (so whether the backend matters); ``conv_cases`` lists their shapes at the batch.
    """

    name: str
    build: Callable[[str | None], object]
    input_shape: tuple[int, ...]  # one sample, no batch axis
    batch_size: int
    uses_kernel: bool
    conv_cases: Callable[[], list[Case]]


def _cifar10_step_model(preset: str) -> StepModel:
    from nnbench import recipes

    return StepModel(
        name=f"cifar10-{preset}",
        build=lambda kernel: recipes.build_cifar10_model(kernel=kernel, preset=preset),
        input_shape=(3, 32, 32),
        batch_size=recipes.cifar10_recipe(preset).batch_size,
        uses_kernel=True,
        conv_cases=lambda: recipe_cases(preset),
    )


def _mnist_step_model() -> StepModel:
    from nnbench import recipes

    return StepModel(
        name="mnist",
        build=lambda kernel: recipes.build_mnist_model(),
        input_shape=(784,),
        batch_size=recipes.MNIST.batch_size,
        uses_kernel=False,
        conv_cases=list,
    )


#: The models whose training step is benchmarked, by name (built lazily: recipes import the engine).
STEP_MODELS: dict[str, Callable[[], StepModel]] = {
    "cifar10-fast": functools.partial(_cifar10_step_model, "fast"),
    "mnist": _mnist_step_model,
}


def train_step_call(
    model: str | StepModel, backend: str | None, rng: np.random.Generator
) -> TimedCall:
    """One optimizer step (forward, loss gradient, backward, update) of a whole recipe model.

    ``model`` is a ``STEP_MODELS`` name or a ``StepModel``; ``backend`` runs every Conv2D
    (ignored by models without one). The batch is random float32 data with random labels at
    the recipe's batch size. ``fn()`` returns the batch loss; ``check`` asserts the loss and
    every parameter are finite. FLOPs: three times the forward FLOPs of the Conv2D and Dense
    layers (forward, input gradient, weight gradient).
    """
    from nnbench import recipes

    spec = STEP_MODELS[model]() if isinstance(model, str) else model
    if spec.uses_kernel:
        for case in spec.conv_cases():
            reason = unsupported_reason(backend, case)
            if reason:
                raise Unsupported(f"{case.label}: {reason}")
    net = spec.build(backend if spec.uses_kernel else None)
    if tuple(net.input_shape) != spec.input_shape:
        raise ValueError(f"{spec.name}: model input {net.input_shape} != {spec.input_shape}")
    x = rng.standard_normal((spec.batch_size, *spec.input_shape), dtype=np.float32)
    (classes,) = net.output_shape
    y = rng.integers(0, classes, size=spec.batch_size)

    def fn() -> float:
        loss, _ = net.train_on_batch(x, y)
        return loss

    def check(loss) -> None:
        if not math.isfinite(loss):
            raise AssertionError(f"{spec.name} step on {backend}: loss is {loss}")
        for key, value in net.parameters().items():
            if not np.isfinite(value).all():
                raise AssertionError(
                    f"{spec.name} step on {backend}: parameter {key} is not finite"
                )

    flops = 3 * recipes.model_forward_flops(net) * spec.batch_size
    return TimedCall(fn, check, flops)


def sgemm_call(n: int = 2048, rng: np.random.Generator | None = None) -> TimedCall:
    """One float32 numpy ``a @ b`` of two n x n matrices (2 n^3 FLOPs), the calibration call."""
    rng = rng_for(f"sgemm{n}") if rng is None else rng
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)

    def check(result) -> float:
        rows = slice(0, min(n, 8))  # a few rows in float64 suffice to catch a wrong product
        return _compare(
            f"sgemm {n}",
            np.asarray(result)[rows],
            lambda: a[rows].astype(np.float64) @ b,
            (min(n, 8), n),
            "float32",
            n,
        )

    return TimedCall(functools.partial(np.matmul, a, b), check, 2 * n**3)


def sgemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's practical float32 peak: GFLOP/s of the fastest of ``repeats`` n^3 products
    (after one warm-up), under whatever thread limits are in force."""
    call = sgemm_call(n)
    call()
    best = min(time_call(call.fn) for _ in range(max(1, repeats)))
    return call.flops / best / 1e9


# --- rounds, memory, metadata ---------------------------------------------------------------

#: Rounds of a timed benchmark are chosen so they take about the budget, within these bounds.
MIN_ROUNDS, MAX_ROUNDS = 3, 100


def choose_rounds(seconds_per_call: float, budget: float) -> int:
    """How many timed rounds fit ``budget`` seconds, at least MIN_ROUNDS, at most MAX_ROUNDS."""
    if seconds_per_call <= 0:
        return MAX_ROUNDS
    return int(min(MAX_ROUNDS, max(MIN_ROUNDS, round(budget / seconds_per_call))))


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one ``fn()`` takes (perf_counter)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _status_bytes(field: str) -> int:
    with open(_STATUS, encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise OSError(f"{field} not in {_STATUS}")


def _reset_high_water_mark() -> None:
    with open(_CLEAR_REFS, "w", encoding="ascii") as fh:
        fh.write("5")  # "5" resets VmHWM to the current VmRSS (Linux >= 4.0)


@functools.cache
def _malloc_trim() -> Callable[[], None]:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    return (lambda: trim(0)) if trim is not None else (lambda: None)


@functools.cache
def memory_method() -> str:
    """``"rss-hwm"`` (Linux /proc: every allocator) or ``"tracemalloc"`` (numpy only)."""
    if sys.platform.startswith("linux"):
        try:
            _status_bytes("VmHWM")
            _reset_high_water_mark()
            return "rss-hwm"
        except OSError:
            pass
    return "tracemalloc"


def peak_memory_bytes(fn: Callable[[], object]) -> int:
    """Peak extra memory of one ``fn()`` call, in bytes, its result included (untimed).

    Measured with ``memory_method()``; a call that allocates nothing new reports about 0.
    """
    kernels.release_scratch()  # a cold call: buffers reused across calls count too
    gc.collect()
    if memory_method() == "rss-hwm":
        _malloc_trim()()  # hand freed heap pages back, so reusing them shows up as growth
        before = _status_bytes("VmRSS")
        _reset_high_water_mark()
        result = fn()
        peak = _status_bytes("VmHWM")
        del result
        return max(0, peak - before)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
        del result
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, peak - before)


def thread_counts() -> dict[str, int | None]:
    """Threads in force now: numpy's BLAS (threadpoolctl) and torch's intra-op pool."""
    from threadpoolctl import threadpool_info

    blas = [pool.get("num_threads") for pool in threadpool_info() if pool.get("user_api") == "blas"]
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_threads = None
    return {"blas_threads": max(blas) if blas else None, "torch_threads": torch_threads}


def extra_info(
    backend: str,
    pass_: str,
    case: Case | None = None,
    *,
    flops: int | None = None,
    threads: int | None = None,
    peak_memory: int | None = None,
    max_abs_error: float | None = None,
    suite: str | None = None,
    label: str | None = None,
    input_shape: Sequence[int] | None = None,
    kernel_shape: Sequence[int] | None = None,
    padding: int | None = None,
    dtype: str | None = None,
) -> dict:
    """The ``extra_info`` of one benchmark record: what is needed to read its number.

    From ``case`` come suite, label, shapes, padding, dtype and FLOPs (the keyword arguments
    override them, and describe records without a case: layer, step, sgemm). ``threads`` is the
    count requested; the BLAS and torch counts actually in force are read here.
    """
    info = (
        case.as_dict()
        if case is not None
        else {
            "suite": suite,
            "label": label,
            "input_shape": None,
            "kernel_shape": None,
            "padding": None,
            "dtype": None,
        }
    )
    overrides = {
        "suite": suite,
        "label": label,
        "padding": padding,
        "dtype": dtype,
        "input_shape": None if input_shape is None else list(input_shape),
        "kernel_shape": None if kernel_shape is None else list(kernel_shape),
    }
    info.update({key: value for key, value in overrides.items() if value is not None})
    if flops is None and case is not None:
        flops = case.flops
    return {
        "backend": backend,
        "pass": pass_,
        **info,
        "flops": None if flops is None else int(flops),
        **thread_counts(),
        "threads": threads,
        "peak_memory_bytes": None if peak_memory is None else int(peak_memory),
        "memory_method": None if peak_memory is None else memory_method(),
        "max_abs_error": None if max_abs_error is None else float(max_abs_error),
    }


# --- the quick run (no pytest) --------------------------------------------------------------


def run_quick(
    cases: Sequence[Case] | None = None,
    backends: Sequence[str] | None = None,
    threads: int | None = None,
    repeats: int = 5,
    *,
    passes: Sequence[str] = PASSES,
    sgemm_n: int = 2048,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Time ``cases`` (default ``quick_cases()``) on ``backends`` (default: all available).

    Each (case, pass, backend) gets one warm-up call, ``repeats`` timed calls (perf_counter),
    a check against the torch reference and an untimed memory measurement, and becomes one
    record shaped like an entry of pytest-benchmark's JSON ``benchmarks`` list (name, fullname,
    group, params, extra_info, stats in seconds), named as the same test of
    ``tests/benchmarks`` would be. An SGEMM calibration record comes first. Unsupported
    combinations are left out. ``threads`` pins BLAS and torch as ``--bench-threads`` does.
    """
    cases = quick_cases() if cases is None else list(cases)
    backends = kernels.available() if backends is None else list(backends)
    for pass_ in passes:
        _check_pass(pass_)
    records = []
    machine.tune_allocator()  # as the benchmark session and the accuracy runs do
    with machine.pinned_threads(threads) as pinned:
        call = sgemm_call(sgemm_n)
        records.append(
            _quick_record(
                "test_bench_sgemm.py::test_sgemm",
                f"sgemm-{sgemm_n}",
                "sgemm",
                {"n": sgemm_n},
                call.fn,
                call.check,
                repeats,
                lambda error, memory: extra_info(
                    "numpy",
                    "sgemm",
                    flops=call.flops,
                    threads=pinned,
                    suite="sgemm",
                    label=f"{sgemm_n}^3",
                    input_shape=(sgemm_n, sgemm_n),
                    kernel_shape=(sgemm_n, sgemm_n),
                    dtype="float32",
                    peak_memory=memory,
                    max_abs_error=error,
                ),
            )
        )
        for case in cases:
            for pass_ in passes:
                for backend in backends:
                    if unsupported_reason(backend, case):
                        continue
                    param = f"{backend}-{pass_}-{case.id}"
                    if progress is not None:
                        progress(param)
                    fn, check = make_call(backend, case, pass_, case_seed(case))
                    records.append(
                        _quick_record(
                            "test_bench_convolve.py::test_convolve",
                            param,
                            f"{case.id} {pass_}",
                            {"backend": backend, "pass_": pass_, "case_id": case.id},
                            fn,
                            check,
                            repeats,
                            lambda error, memory, backend=backend, pass_=pass_, case=case: (
                                extra_info(
                                    backend,
                                    pass_,
                                    case,
                                    threads=pinned,
                                    peak_memory=memory,
                                    max_abs_error=error,
                                )
                            ),
                        )
                    )
    return records


def _quick_record(test, param, group, params, fn, check, repeats, make_info) -> dict:
    fn()  # warm-up: first-call costs (thread pools, FFT plans) are not per-call costs
    times = []
    result = None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    error = check(result)
    del result
    memory = peak_memory_bytes(fn)
    module, function = test.split("::")
    name = f"{function}[{param}]"
    return {
        "group": group,
        "name": name,
        "fullname": f"tests/benchmarks/{module}::{name}",
        "params": params,
        "param": param,
        "extra_info": make_info(error, memory),
        "stats": _stats(times),
    }


def _stats(times: Sequence[float]) -> dict:
    """The pytest-benchmark ``stats`` keys that a report reads (seconds)."""
    ordered = sorted(times)
    mean = statistics.fmean(ordered)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": mean,
        "stddev": statistics.stdev(ordered) if len(ordered) >= 2 else 0.0,
        "median": statistics.median(ordered),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "rounds": len(ordered),
        "iterations": 1,
        "total": sum(ordered),
        "ops": 1.0 / mean if mean > 0 else None,
        "data": list(times),
    }


# --- reference and comparison ---------------------------------------------------------------


def _check_pass(pass_: str) -> str:
    if pass_ not in PASSES:
        raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
    return pass_


class Operands:
    """x ~ N(0, 1), He-scaled kernels (outputs of order 1) and grad_outputs dY ~ N(0, 1) for a
    case, with their float64 torch reference computed on first use.

    Checksums taken at creation let ``assert_unchanged`` catch a backend that writes into its
    inputs (which would corrupt the operands of the next backend, not its own result).
    """

    def __init__(self, case: Case, rng: np.random.Generator):
        dtype = np.dtype(case.dtype)
        _, d, kh, kw = case.kernel_shape
        self.case = case
        self.x = rng.standard_normal(case.input_shape, dtype=dtype)
        self.kernels = rng.standard_normal(case.kernel_shape, dtype=dtype)
        self.kernels *= dtype.type(math.sqrt(2.0 / (d * kh * kw)))
        self.grad_outputs = rng.standard_normal(case.output_shape, dtype=dtype)
        self._checksums = self._checksum()
        self._reference = None

    def _checksum(self) -> tuple[int, ...]:
        return tuple(zlib.crc32(a) for a in (self.x, self.kernels, self.grad_outputs))

    def reference(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(outputs, grad_inputs, grad_kernels) in float64, by torch autograd."""
        if self._reference is None:
            # imported here: torch loads only when a result is checked
            from reference import convolve_with_gradients

            expected = convolve_with_gradients(
                self.x, self.kernels, self.grad_outputs, self.case.padding
            )
            self._reference = tuple(expected[p] for p in PASSES)
        return self._reference

    def assert_unchanged(self, name: str) -> None:
        if self._checksum() != self._checksums:
            raise AssertionError(f"{name}: the call modified its input arrays")


def operands(case: Case, rng: np.random.Generator | int) -> Operands:
    """Fresh operands drawn from a generator, or shared ones for an int seed (see make_call)."""
    if isinstance(rng, np.random.Generator):
        return Operands(case, rng)
    return _shared_operands(case, int(rng))


@functools.lru_cache(maxsize=2)  # the benchmarks walk case by case; two cover a boundary
def _shared_operands(case: Case, seed: int) -> Operands:
    return Operands(case, np.random.default_rng(seed))


def case_seed(case: Case) -> int:
    """The seed the benchmarks draw a case's operands from (the same for every backend)."""
    return zlib.crc32(case.id.encode())


def _compare(name, result, expected, shape, dtype, reduction: int) -> float:
    """Assert ``result`` matches ``expected()`` within the bound of the module docstring."""
    if not isinstance(result, np.ndarray):
        raise TypeError(f"{name}: returned {type(result).__name__}, not a numpy.ndarray")
    if result.shape != tuple(shape):
        raise AssertionError(f"{name}: shape {result.shape} != expected {tuple(shape)}")
    if result.dtype != np.dtype(dtype):
        raise AssertionError(f"{name}: dtype {result.dtype} != expected {np.dtype(dtype)}")
    reference = np.asarray(expected(), dtype=np.float64)
    error = np.abs(result.astype(np.float64) - reference)
    scale = max(float(np.max(np.abs(reference), initial=0.0)), float(np.finfo(np.float64).tiny))
    bound = ERROR_FACTOR[np.dtype(dtype).name] * math.sqrt(reduction) * scale
    worst = float(np.max(error, initial=0.0)) if np.isfinite(error).all() else math.inf
    if not worst <= bound:
        flat = int(np.argmax(np.where(np.isfinite(error), error, np.inf)))
        where = tuple(int(i) for i in np.unravel_index(flat, error.shape))
        factor = ERROR_FACTOR[np.dtype(dtype).name]
        raise AssertionError(
            f"{name}: max abs error {worst:.3g} exceeds {bound:.3g} (= {factor:.3g} * "
            f"sqrt(K={reduction}) * max|reference| {scale:.3g}); worst at {list(where)}: "
            f"got {result[where].item():.7g}, expected {reference[where].item():.7g}"
        )
    return worst
