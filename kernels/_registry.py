"""Backend discovery and the generic backward of section 5.7.

Every module ``kernels/backend_<name>.py`` is a backend called ``<name>``. It must define

    convolve(inputs, kernels, padding) -> outputs      # the forward math, inputs already valid

and may define

    supports(input_shape, kernel_shape, padding, dtype) -> str | None
        a reason string when the case is out of its reach (tests and benchmarks skip it);
    grad_inputs(grad_outputs, kernels, padding) -> grad of inputs
    grad_kernels(inputs, grad_outputs, padding) -> grad of kernels
        a specialised backward; otherwise the generic one below, built on its own convolve;
    EXACT = True
        a promise that sums of small integers come out exact (no FFT-style rounding); the
        cross-check tests and the report then hold it to equality on integer inputs.

Buffers a backend reuses from one call to the next come from ``kernels._layout.scratch``, so
``kernels.release_scratch()`` can free them all.

A module that raises ``ImportError`` on import (say, torch is not installed) is recorded as
unavailable together with the error message.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

PREFIX = "backend_"


@dataclass(frozen=True)
class Backend:
    """One convolution backend: its forward and both gradients, all in the NCHW convention."""

    name: str
    convolve: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    grad_inputs: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    grad_kernels: Callable[[np.ndarray, np.ndarray, int], np.ndarray]
    supports: Callable[[tuple, tuple, int, np.dtype], str | None]
    specialised_backward: bool
    exact: bool
    module: ModuleType

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def generic_grad_inputs(convolve: Callable) -> Callable:
    """dL/dX = convolve(dL/dY, flip(K)^T, kh - 1 - p), cropped where the pads differ per axis.

    The padding of section 5.7 is kh - 1 - p along h and kw - 1 - p along w. ``convolve`` takes
    one symmetric padding q, so use q = max of both (and >= 0) and crop the surplus q - p' on
    each side; that also covers p > k - 1, where p' is negative.
    """

    def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
        _, _, kh, kw = kernels.shape
        ph, pw = kh - 1 - padding, kw - 1 - padding
        q = max(ph, pw, 0)
        flipped = kernels[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        full = convolve(grad_outputs, flipped, q)
        ch, cw = q - ph, q - pw
        return full[:, :, ch : full.shape[2] - ch, cw : full.shape[3] - cw]

    return grad_inputs


def generic_grad_kernels(convolve: Callable) -> Callable:
    """dL/dK = convolve(flip(X)^T, (dL/dY)^T, p)^T: batch plays the channel role (section 5.7)."""

    def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
        flipped = inputs[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
        result = convolve(flipped, grad_outputs.transpose(1, 0, 2, 3), padding)
        return result.transpose(1, 0, 2, 3)

    return grad_kernels


def _supports_everything(input_shape, kernel_shape, padding, dtype) -> None:
    return None


def load(module: ModuleType, name: str) -> Backend:
    """Wrap a backend module into a ``Backend`` record."""
    conv = module.convolve
    own_gi = getattr(module, "grad_inputs", None)
    own_gk = getattr(module, "grad_kernels", None)
    return Backend(
        name=name,
        convolve=conv,
        grad_inputs=own_gi or generic_grad_inputs(conv),
        grad_kernels=own_gk or generic_grad_kernels(conv),
        supports=getattr(module, "supports", _supports_everything),
        specialised_backward=bool(own_gi or own_gk),
        exact=bool(getattr(module, "EXACT", False)),
        module=module,
    )


def discover() -> tuple[dict[str, Backend], dict[str, str]]:
    """Import every ``kernels/backend_*.py``; return (available backends, unavailable reasons)."""
    import kernels

    found: dict[str, Backend] = {}
    missing: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(kernels.__path__), key=lambda i: i.name):
        if not info.name.startswith(PREFIX):
            continue
        name = info.name[len(PREFIX) :]
        try:
            module = importlib.import_module(f"kernels.{info.name}")
        except ImportError as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
            continue
        found[name] = load(module, name)
    return found, missing
