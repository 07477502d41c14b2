"""Interchangeable multi-channel convolution backends behind one registry.

Convention (assignment sections 3.2-3.3, 5.6-5.7), shared by every backend:

    convolve(inputs (n, d, h, w), kernels (c, d, kh, kw), padding p)
        -> outputs (n, c, h - kh + 1 + 2p, w - kw + 1 + 2p)

    outputs[b, i] = sum_j inputs[b, j] (*) kernels[i, j]

where (*) is a TRUE 2-D convolution (the kernel is flipped, not cross-correlation) of a
zero-padded image (p zeros on each side), stride 1. The output dtype is the input dtype.

The gradients of that operation are convolutions too (section 5.7):

    grad_inputs(grad_outputs, kernels, p)  = convolve(grad_outputs, flip(kernels)^T, kh - 1 - p)
    grad_kernels(inputs, grad_outputs, p)  = convolve(flip(inputs)^T, grad_outputs^T, p)^T

so every backend serves the forward pass and both gradients of ``nnbench.Conv2D``.

A backend is one module ``kernels/backend_<name>.py``, found by the registry without editing a
list (see ``kernels._registry``). This module is the front door: it validates arguments once and
raises ``ValueError``/``TypeError`` naming the argument; backends only do math.

Importing ``kernels`` loads numpy and the backend modules, which load their own libraries
(torch, scipy) when first called; it changes no environment variable and starts no thread.
"""

from __future__ import annotations

import os

import numpy as np

from kernels import _layout
from kernels._registry import Backend, discover

__all__ = [
    "DEFAULT_BACKEND",
    "ENV_VAR",
    "PASS_FUNCTIONS",
    "Backend",
    "available",
    "convolve",
    "get",
    "grad_inputs",
    "grad_kernels",
    "output_shape",
    "register",
    "release_scratch",
    "resolve",
    "unavailable",
]

#: Environment variable that picks the backend when none is given explicitly.
ENV_VAR = "NNBENCH_KERNEL"
#: Backend used when neither an argument nor ``NNBENCH_KERNEL`` names one (always available).
DEFAULT_BACKEND = "im2col"

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_BACKENDS, _UNAVAILABLE = discover()
#: Backends registered at run time rather than found as files (nnbench registers "auto").
_REGISTERED: dict[str, Backend] = {}
#: Where the run-time backends come from, for the error when one is asked for unregistered.
_PROVIDED_BY = {"auto": "nnbench.auto (import nnbench first)"}


def register(backend: Backend) -> None:
    """Offer ``backend`` under its name beside the file backends (not in ``available()``:
    those are the backends that compute convolutions themselves)."""
    if backend.name in _BACKENDS:
        raise ValueError(f"backend {backend.name!r} is already a file backend")
    _REGISTERED[backend.name] = backend


def available() -> list[str]:
    """Names of the backends that can run on this machine, sorted."""
    return sorted(_BACKENDS)


def unavailable() -> dict[str, str]:
    """Backends whose module exists but cannot run here, mapped to the reason."""
    return dict(_UNAVAILABLE)


def release_scratch() -> None:
    """Free the buffers that backends keep from one call to the next (they come back on use)."""
    _layout.release_scratch()


def get(name: str) -> Backend:
    """The backend called ``name``; ``ValueError`` lists the available ones if it is unknown."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str naming a backend, got {type(name).__name__}")
    if name in _BACKENDS:
        return _BACKENDS[name]
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _PROVIDED_BY:
        raise ValueError(f"backend {name!r} is provided by {_PROVIDED_BY[name]}")
    if name in _UNAVAILABLE:
        raise ValueError(
            f"backend {name!r} is not available on this machine: {_UNAVAILABLE[name]}; "
            f"available backends: {', '.join(available())}"
        )
    raise ValueError(
        f"unknown backend {name!r}; available backends: {', '.join(available())}"
        + (f" (unavailable here: {', '.join(sorted(_UNAVAILABLE))})" if _UNAVAILABLE else "")
    )


def resolve(backend: str | Backend | None = None) -> Backend:
    """The backend to use: ``backend`` if given, else ``$NNBENCH_KERNEL``, else the default."""
    if isinstance(backend, Backend):
        return backend
    if backend is None:
        backend = os.environ.get(ENV_VAR) or DEFAULT_BACKEND
    return get(backend)


def output_shape(
    input_shape: tuple[int, ...], kernel_shape: tuple[int, ...], padding: int
) -> tuple[int, int, int, int]:
    """Shape of ``convolve(inputs, kernels, padding)`` for the given shapes."""
    n, _, h, w = input_shape
    c, _, kh, kw = kernel_shape
    return n, c, h - kh + 1 + 2 * padding, w - kw + 1 + 2 * padding


def convolve(
    inputs: np.ndarray,
    kernels: np.ndarray,
    padding: int = 0,
    backend: str | Backend | None = None,
) -> np.ndarray:
    """True multi-channel convolution with zero padding ``padding`` on each side, stride 1.

    inputs: (n, d, h, w) float32 or float64; kernels: (c, d, kh, kw), same dtype;
    returns (n, c, h - kh + 1 + 2p, w - kw + 1 + 2p) in the input dtype.
    """
    _check_array("inputs", inputs, ("n", "d", "h", "w"))
    _check_array("kernels", kernels, ("c", "d", "kh", "kw"))
    _check_same_dtype(("inputs", inputs), ("kernels", kernels))
    if inputs.shape[1] != kernels.shape[1]:
        raise ValueError(
            f"channel mismatch: inputs has d={inputs.shape[1]} channels (axis 1 of "
            f"{inputs.shape}) but kernels expects d={kernels.shape[1]} (axis 1 of {kernels.shape})"
        )
    padding = _check_padding(padding)
    out = output_shape(inputs.shape, kernels.shape, padding)
    if out[2] < 1 or out[3] < 1:
        raise ValueError(
            f"empty output: inputs {inputs.shape} with kernels {kernels.shape} and padding="
            f"{padding} give output {out}; need h + 2*padding >= kh and w + 2*padding >= kw"
        )
    impl = _resolve_for(backend, inputs.shape, kernels.shape, padding, inputs.dtype)
    return impl.convolve(inputs, kernels, padding)


def grad_inputs(
    grad_outputs: np.ndarray,
    kernels: np.ndarray,
    padding: int = 0,
    backend: str | Backend | None = None,
) -> np.ndarray:
    """Gradient of ``convolve(inputs, kernels, padding)`` w.r.t. ``inputs``.

    grad_outputs: (n, c, oh, ow); kernels: (c, d, kh, kw);
    returns (n, d, oh + kh - 1 - 2p, ow + kw - 1 - 2p).
    """
    _check_array("grad_outputs", grad_outputs, ("n", "c", "oh", "ow"))
    _check_array("kernels", kernels, ("c", "d", "kh", "kw"))
    _check_same_dtype(("grad_outputs", grad_outputs), ("kernels", kernels))
    if grad_outputs.shape[1] != kernels.shape[0]:
        raise ValueError(
            f"channel mismatch: grad_outputs has c={grad_outputs.shape[1]} channels (axis 1 of "
            f"{grad_outputs.shape}) but kernels has c={kernels.shape[0]} (axis 0 of "
            f"{kernels.shape})"
        )
    padding = _check_padding(padding)
    _, _, oh, ow = grad_outputs.shape
    _, _, kh, kw = kernels.shape
    h, w = oh + kh - 1 - 2 * padding, ow + kw - 1 - 2 * padding
    if h < 1 or w < 1:
        raise ValueError(
            f"grad_outputs {grad_outputs.shape} cannot come from kernels {kernels.shape} with "
            f"padding={padding}: the inputs would have spatial shape ({h}, {w})"
        )
    x_shape = (grad_outputs.shape[0], kernels.shape[1], h, w)
    impl = _resolve_for(backend, x_shape, kernels.shape, padding, grad_outputs.dtype)
    return impl.grad_inputs(grad_outputs, kernels, padding)


def grad_kernels(
    inputs: np.ndarray,
    grad_outputs: np.ndarray,
    padding: int = 0,
    backend: str | Backend | None = None,
) -> np.ndarray:
    """Gradient of ``convolve(inputs, kernels, padding)`` w.r.t. ``kernels``, summed over the batch.

    inputs: (n, d, h, w); grad_outputs: (n, c, oh, ow);
    returns (c, d, h - oh + 1 + 2p, w - ow + 1 + 2p).
    """
    _check_array("inputs", inputs, ("n", "d", "h", "w"))
    _check_array("grad_outputs", grad_outputs, ("n", "c", "oh", "ow"))
    _check_same_dtype(("inputs", inputs), ("grad_outputs", grad_outputs))
    if inputs.shape[0] != grad_outputs.shape[0]:
        raise ValueError(
            f"batch mismatch: inputs has n={inputs.shape[0]} but grad_outputs has "
            f"n={grad_outputs.shape[0]}"
        )
    padding = _check_padding(padding)
    _n, d, h, w = inputs.shape
    _, c, oh, ow = grad_outputs.shape
    kh, kw = h - oh + 1 + 2 * padding, w - ow + 1 + 2 * padding
    if kh < 1 or kw < 1:
        raise ValueError(
            f"grad_outputs {grad_outputs.shape} cannot come from inputs {inputs.shape} with "
            f"padding={padding}: the kernels would have spatial shape ({kh}, {kw})"
        )
    impl = _resolve_for(backend, inputs.shape, (c, d, kh, kw), padding, inputs.dtype)
    return impl.grad_kernels(inputs, grad_outputs, padding)


#: The public function of each pass, by name.
PASS_FUNCTIONS = {"forward": convolve, "grad_inputs": grad_inputs, "grad_kernels": grad_kernels}


# --- validation (the front door; backends assume all of this holds) -------------------------


def _check_array(name: str, array: object, axes: tuple[str, ...]) -> None:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
    if array.ndim != len(axes):
        raise ValueError(
            f"{name} must have {len(axes)} dimensions ({', '.join(axes)}), "
            f"got {array.ndim} with shape {array.shape}"
        )
    if array.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {array.dtype}")
    if 0 in array.shape:
        raise ValueError(f"{name} must not be empty, got shape {array.shape}")


def _check_same_dtype(*named: tuple[str, np.ndarray]) -> None:
    dtypes = {a.dtype for _, a in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{n} is {a.dtype}" for n, a in named)
        raise TypeError(f"mixed dtypes: {listing}; cast them to one float dtype")


def _check_padding(padding: object) -> int:
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)):
        raise TypeError(f"padding must be a non-negative int, got {padding!r}")
    if padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding}")
    return int(padding)


def _resolve_for(backend, x_shape, k_shape, padding, dtype) -> Backend:
    impl = resolve(backend)
    reason = impl.supports(tuple(x_shape), tuple(k_shape), padding, dtype)
    if reason:
        raise ValueError(f"backend {impl.name!r} cannot compute this case: {reason}")
    return impl
