"""``torch`` backend: ``torch.nn.functional.conv2d`` on the CPU with the kernel flipped.

conv2d computes a cross-correlation, so flipping both spatial axes of the kernels makes it the
true convolution of the convention. Arrays cross into torch with ``torch.from_numpy`` (zero
copy for writable arrays; read-only or negatively-strided ones are copied once, since torch
tensors cannot alias them) and the result leaves with ``.numpy()`` (zero copy).

The gradients use torch's own convolution backward kernels (``conv_transpose2d`` for the input
gradient, the weight-gradient routine of ``torch.nn.grad``), which is what a torch user gets.

After each call, ``release_openmp`` (``kernels.threads``) ends torch's OpenMP workers where they
would otherwise spin on the cores the engine's numpy passes need next.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np

from kernels.threads import release_openmp

#: direct convolution sums: exact while every partial sum is an integer below 2**24.
EXACT = True

if importlib.util.find_spec("torch") is None:  # unavailable, without loading torch to find out
    raise ImportError("the torch backend needs torch, which is not installed")


@functools.cache
def _torch():
    """torch, loaded on the first call of this backend (``import kernels`` does not load it)."""
    import torch
    import torch.nn.functional
    import torch.nn.grad

    return torch


def _tensor(array: np.ndarray):
    if not array.flags.writeable or any(s < 0 for s in array.strides):
        array = np.array(array)  # torch cannot wrap read-only or negative-stride memory
    return _torch().from_numpy(array)


def _flip(kernels: np.ndarray):
    return _torch().flip(_tensor(kernels), dims=(2, 3))


def convolve(inputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    torch = _torch()
    with torch.no_grad():
        result = torch.nn.functional.conv2d(_tensor(inputs), _flip(kernels), padding=padding)
    release_openmp()
    return result.numpy()


def grad_inputs(grad_outputs: np.ndarray, kernels: np.ndarray, padding: int) -> np.ndarray:
    torch = _torch()
    with torch.no_grad():
        transposed = torch.nn.functional.conv_transpose2d
        result = transposed(_tensor(grad_outputs), _flip(kernels), padding=padding)
    release_openmp()
    return result.numpy()


def grad_kernels(inputs: np.ndarray, grad_outputs: np.ndarray, padding: int) -> np.ndarray:
    torch = _torch()
    _, d, h, w = inputs.shape
    c, oh, ow = grad_outputs.shape[1:]
    shape = (c, d, h - oh + 1 + 2 * padding, w - ow + 1 + 2 * padding)
    with torch.no_grad():
        grad = torch.nn.grad.conv2d_weight(
            _tensor(inputs), shape, _tensor(grad_outputs), padding=padding
        )
        result = torch.flip(grad, dims=(2, 3))
    release_openmp()
    return result.numpy()
