"""``ConvCase``: one convolution to check or time, and its seeded operands.

A case is ``convolve(inputs input_shape, kernels kernel_shape, padding)`` in one dtype, with
its two gradients. Its id reads ``k3p1[128,16,16,16]->32-float32`` (kernel size, padding,
input shape, output channels, dtype) in the tests, the benchmarks and the report alike, and its
operands are drawn from a generator seeded from that id, so every backend of every check sees
the same numbers.
"""

from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

import kernels

PASSES = ("forward", "grad_inputs", "grad_kernels")
DTYPES = ("float32", "float64")


def seed_for(key: str) -> int:
    """A 32-bit seed derived from ``key`` (a case or test id): reproducible, different per key."""
    return zlib.crc32(key.encode())


@dataclass(frozen=True)
class ConvCase:
    """convolve(inputs (n, d, h, w), kernels (c, d, kh, kw), padding p) in ``dtype``.

    ``label`` is a short human name ("fast/conv2", "k7/c32"); it is not part of the id, nor of
    equality: two cases of the same shapes and dtype are the same case.
    """

    input_shape: tuple[int, int, int, int]
    kernel_shape: tuple[int, int, int, int]
    padding: int
    dtype: str = "float32"
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "kernel_shape", tuple(int(v) for v in self.kernel_shape))
        object.__setattr__(self, "padding", int(self.padding))
        try:
            dtype = np.dtype(self.dtype).name
        except TypeError as exc:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}") from exc
        object.__setattr__(self, "dtype", dtype)
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
        """``k3p1[128,16,16,16]->32-float32``: kernel size, padding, input, outputs, dtype."""
        _, _, kh, kw = self.kernel_shape
        size = f"k{kh}" if kh == kw else f"k{kh}x{kw}"
        shape = ",".join(map(str, self.input_shape))
        return f"{size}p{self.padding}[{shape}]->{self.kernel_shape[0]}-{self.dtype}"

    def shape_of(self, pass_: str) -> tuple[int, int, int, int]:
        """Shape of the result of ``pass_``: outputs, input gradient or kernel gradient."""
        return {
            "forward": self.output_shape,
            "grad_inputs": self.input_shape,
            "grad_kernels": self.kernel_shape,
        }[check_pass(pass_)]

    def reduction_length(self, pass_: str) -> int:
        """K: how many products each element of ``pass_``'s result sums (at most)."""
        n, c, oh, ow = self.output_shape
        _, d, kh, kw = self.kernel_shape
        lengths = {"forward": d * kh * kw, "grad_inputs": c * kh * kw, "grad_kernels": n * oh * ow}
        return lengths[check_pass(pass_)]

    @property
    def same_padding(self) -> bool:
        """Whether ``Conv2D`` (square odd kernel, p = (k - 1) / 2) computes exactly this case."""
        _, _, kh, kw = self.kernel_shape
        return kh == kw and kh % 2 == 1 and self.padding == (kh - 1) // 2

    def with_dtype(self, dtype: str) -> ConvCase:
        return ConvCase(self.input_shape, self.kernel_shape, self.padding, dtype, self.label)

    def unsupported_by(self, backend) -> str | None:
        """The backend's reason for not computing this case (its ``supports``), or None."""
        impl = kernels.resolve(backend)
        reason = impl.supports(
            self.input_shape, self.kernel_shape, self.padding, np.dtype(self.dtype)
        )
        return reason or None

    def as_dict(self) -> dict:
        return {
            "case_id": self.id,
            "label": self.label,
            "input_shape": list(self.input_shape),
            "kernel_shape": list(self.kernel_shape),
            "padding": self.padding,
            "dtype": self.dtype,
        }


def check_pass(pass_: str) -> str:
    if pass_ not in PASSES:
        raise ValueError(f"pass must be one of {PASSES}, got {pass_!r}")
    return pass_


class Operands:
    """x, kernels and grad_outputs for a case, with their float64 torch reference.

    ``integer``: small integers in -4..4, so that every sum is exact in float32 and float64.
    Otherwise x ~ N(0, 1), He-scaled kernels (outputs of order 1) and grad_outputs ~ N(0, 1).
    Checksums taken at creation let ``assert_unchanged`` catch a backend that writes into its
    inputs (which would corrupt the operands of the next backend, not its own result).
    """

    def __init__(self, case: ConvCase, rng: np.random.Generator, integer: bool = False):
        dtype = np.dtype(case.dtype)
        self.case, self.integer = case, integer
        shapes = case.input_shape, case.kernel_shape, case.output_shape
        if integer:
            self.x, self.kernels, self.grad_outputs = (
                rng.integers(-4, 5, size=shape).astype(dtype) for shape in shapes
            )
        else:
            self.x, self.kernels, self.grad_outputs = (
                rng.standard_normal(shape).astype(dtype) for shape in shapes
            )
            _, d, kh, kw = case.kernel_shape
            self.kernels *= dtype.type(math.sqrt(2.0 / (d * kh * kw)))
        self._checksums = self._checksum()
        self._reference = None

    def _checksum(self) -> tuple[int, ...]:
        return tuple(zlib.crc32(a) for a in (self.x, self.kernels, self.grad_outputs))

    def arguments(self, pass_: str) -> tuple[np.ndarray, np.ndarray]:
        """The two arrays ``kernels.<pass_>`` takes, in order."""
        return {
            "forward": (self.x, self.kernels),
            "grad_inputs": (self.grad_outputs, self.kernels),
            "grad_kernels": (self.x, self.grad_outputs),
        }[check_pass(pass_)]

    def reference(self, pass_: str) -> np.ndarray:
        """The float64 torch autograd result of ``pass_`` on these operands (computed once)."""
        if self._reference is None:
            from reference import convolve_with_gradients  # torch loads only when checked

            self._reference = convolve_with_gradients(
                self.x, self.kernels, self.grad_outputs, self.case.padding
            )
        return self._reference[check_pass(pass_)]

    def assert_unchanged(self, name: str) -> None:
        if self._checksum() != self._checksums:
            raise AssertionError(f"{name}: the call modified its input arrays")


def operands(case: ConvCase, *, integer: bool = False, seed: int | None = None) -> Operands:
    """The operands of ``case``, drawn from ``seed`` (default: seeded from the case id).

    The same (case, integer, seed) gives the same, shared ``Operands`` object while it is
    among the last few used, so the backends of one check share the float64 reference.
    """
    plain = ConvCase(case.input_shape, case.kernel_shape, case.padding, case.dtype)  # one entry
    return _shared(plain, integer, seed_for(case.id) if seed is None else int(seed))  # per id


@functools.lru_cache(maxsize=4)
def _shared(case: ConvCase, integer: bool, seed: int) -> Operands:
    return Operands(case, np.random.default_rng(seed), integer)


def _case(n, d, h, w, c, kh, kw, p, label) -> ConvCase:
    return ConvCase((n, d, h, w), (c, d, kh, kw), p, "float32", label)


#: The shapes every backend is checked on, forward and both gradients, in each dtype: by the
#: unit tests (tests/test_kernels.py) and by the report's verification matrix. Small, so that
#: the float64 reference and every backend run in well under a second each.
CHECK_CASES: tuple[ConvCase, ...] = (
    _case(2, 3, 32, 32, 8, 3, 3, 1, "3x3 same"),
    _case(2, 3, 32, 32, 8, 1, 1, 0, "1x1"),
    _case(2, 3, 32, 32, 8, 5, 5, 2, "5x5 same"),
    _case(2, 3, 32, 32, 8, 7, 7, 3, "7x7 same"),
    _case(1, 4, 8, 8, 5, 3, 3, 1, "batch of one"),
    _case(3, 1, 10, 10, 1, 3, 3, 1, "one channel in and out"),
    _case(2, 3, 9, 10, 4, 4, 5, 0, "non-square image, even kernel"),
    _case(2, 3, 12, 12, 4, 3, 3, 0, "valid (p = 0)"),
    _case(2, 3, 8, 8, 4, 3, 3, 2, "full (p = k - 1)"),
    _case(2, 2, 6, 7, 3, 3, 3, 4, "p > k - 1: zero border"),
    _case(2, 3, 8, 8, 4, 8, 8, 0, "kernel as large as the image"),
    _case(2, 3, 5, 6, 2, 7, 4, 2, "kernel taller than the image"),
    _case(2, 2, 16, 16, 3, 11, 11, 5, "large kernel"),
    # Weight gradient of a 3 -> 8 channel 3x3 'same' Conv2D on 32x32 images, batch 3 (section
    # 5.7): convolve(flip(X)^T (d, n, 32, 32), dY^T (c, n, 32, 32), 1) -> (d, c, 3, 3).
    _case(3, 4, 32, 32, 8, 32, 32, 1, "weight-gradient shape"),
    # Few input channels, many outputs: im2col's input gradient goes through col2im.
    _case(2, 1, 12, 12, 8, 3, 3, 1, "col2im (1 -> 8)"),
    _case(3, 2, 9, 11, 12, 3, 5, 0, "col2im (2 -> 12, 3x5)"),
    # More channels than the loop backend stacks (kw * channels > its STACK_DEPTH, 32, and
    # under half as many outputs): in the forward one GEMM per kernel offset (9 outputs) or one
    # GEMM to every offset's products (4: at most its SCATTER_PRODUCTS, 72); one GEMM per
    # offset in the weight gradient, one per kernel row in the input gradient.
    _case(2, 20, 10, 10, 9, 3, 3, 1, "20 channels to 9"),
    _case(2, 12, 10, 10, 4, 3, 3, 1, "12 channels to 4"),
)
