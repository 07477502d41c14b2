"""Torch versions of the assignment's layers, loss and optimizer steps, same semantics.

Conventions match the engine (not torch's defaults) where they differ:

- convolution is TRUE convolution: ``F.conv2d`` computes cross-correlation, so the kernel is
  flipped on both spatial axes; kernels are (c, d, kh, kw), images NCHW, padding p;
- Dense weights are (units, in): y = x W^T + b;
- ReLU has derivative 1 at x = 0 (torch.relu has 0 there);
- BatchNorm uses the biased batch variance for normalisation AND for the running update
  rm <- m * rm + (1 - m) * mu (torch's ``momentum`` is 1 - m and updates with the unbiased one);
- Dropout multiplies by an injected 0/1 mask while training (no rescaling) and by (1 - p) at
  inference;
- cross-entropy clips probabilities below at eps and averages over the batch.

Every function accepts numpy arrays or tensors (``tensor`` converts) and uses only
differentiable torch ops, so autograd supplies the gradients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

Array = "np.ndarray | torch.Tensor"


def tensor(value, requires_grad: bool = False, dtype=torch.float64) -> torch.Tensor:
    """A float64 (by default) torch tensor from a numpy array, tensor or number."""
    if isinstance(value, torch.Tensor):
        result = value.to(dtype)
    else:
        result = torch.as_tensor(np.array(value, dtype=np.float64), dtype=dtype)
    if requires_grad:
        result = result.detach().clone().requires_grad_(True)
    return result


def _t(value) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else tensor(value)


# --- layers ---------------------------------------------------------------------------------


def dense(x, weights, biases) -> torch.Tensor:
    """x (n, d), weights (units, d), biases (units,) -> (n, units)."""
    return _t(x) @ _t(weights).T + _t(biases)


def relu(x) -> torch.Tensor:
    x = _t(x)
    return x * (x >= 0).to(x.dtype)


def softmax(x) -> torch.Tensor:
    return torch.softmax(_t(x), dim=1)


def conv2d(x, kernels, biases, padding: int) -> torch.Tensor:
    """True convolution: x (n, d, h, w), kernels (c, d, kh, kw), biases (c,), zero padding."""
    return F.conv2d(_t(x), torch.flip(_t(kernels), dims=(2, 3)), _t(biases), padding=padding)


def convolve_with_gradients(inputs, kernels, grad_outputs, padding: int) -> dict[str, np.ndarray]:
    """The true convolution and both of its gradients by torch autograd in float64.

    Returns {"forward", "grad_inputs", "grad_kernels"} as numpy arrays; flipping the kernel
    makes conv2d's cross-correlation the convolution of the assignment.
    """
    x = torch.tensor(np.asarray(inputs), dtype=torch.float64, requires_grad=True)
    k = torch.tensor(np.asarray(kernels), dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, torch.flip(k, dims=(2, 3)), padding=padding)
    y.backward(torch.tensor(np.asarray(grad_outputs), dtype=torch.float64))
    return {
        "forward": y.detach().numpy(),
        "grad_inputs": x.grad.numpy(),
        "grad_kernels": k.grad.numpy(),
    }


def pool2d(x, pool_size: int, mode: str) -> torch.Tensor:
    """Non-overlapping pool_size x pool_size max or average pooling."""
    if mode == "max":
        return F.max_pool2d(_t(x), pool_size)
    if mode == "avg":
        return F.avg_pool2d(_t(x), pool_size)
    raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")


def batchnorm(
    x, gamma, beta, running_mean, running_var, momentum: float, eps: float, training: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, new running_mean, new running_var) for x (n, d, h, w).

    Training normalises with the batch mean and biased variance over (n, h, w) and returns the
    updated running statistics (detached); inference uses and returns the running ones.
    """
    x, gamma, beta = _t(x), _t(gamma), _t(beta)
    running_mean, running_var = _t(running_mean), _t(running_var)
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
        new_mean = momentum * running_mean + (1 - momentum) * mean.detach()
        new_var = momentum * running_var + (1 - momentum) * var.detach()
    else:
        mean, var = running_mean, running_var
        new_mean, new_var = running_mean, running_var
    xhat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + eps)
    y = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
    return y, new_mean, new_var


def flatten(x) -> torch.Tensor:
    x = _t(x)
    return x.reshape(x.shape[0], -1)


def dropout(x, mask, p: float, training: bool) -> torch.Tensor:
    """Training: x * mask (0/1, no rescaling); inference: (1 - p) * x."""
    x = _t(x)
    if training:
        return x * _t(mask).to(x.dtype)
    return (1 - p) * x


def random_flip(x, flipped) -> torch.Tensor:
    """Mirror along the width axis the images whose ``flipped`` (n,) entry is true."""
    x = _t(x)
    flipped = torch.as_tensor(np.asarray(flipped, dtype=bool))
    return torch.where(flipped[:, None, None, None], torch.flip(x, dims=(3,)), x)


# --- loss -----------------------------------------------------------------------------------


def cross_entropy(y_gt, y_pred, eps: float) -> torch.Tensor:
    """-(1/n) sum y_gt * ln(max(eps, y_pred)), shape (1,)."""
    y_gt, y_pred = _t(y_gt), _t(y_pred)
    return (-(y_gt * torch.log(torch.clamp(y_pred, min=eps))).sum() / y_pred.shape[0]).reshape(1)


def softmax_cross_entropy(y_gt, logits, eps: float | None) -> torch.Tensor:
    """Cross-entropy of softmax(logits) via log_softmax, shape (1,).

    With ``eps`` the log-probabilities are clipped below at ln(eps) (the value of the clipped
    cross-entropy); with None they are not (its derivative where nothing is clipped).
    """
    y_gt, logits = _t(y_gt), _t(logits)
    log_probs = torch.log_softmax(logits, dim=1)
    if eps is not None:
        log_probs = torch.clamp(log_probs, min=float(np.log(eps)))
    return (-(y_gt * log_probs).sum() / logits.shape[0]).reshape(1)


# --- optimizer steps ------------------------------------------------------------------------


def sgd_step(parameter, grad, lr: float) -> torch.Tensor:
    """P - lr * g."""
    return _t(parameter) - lr * _t(grad)


def sgd_momentum_step(
    parameter, grad, inertia, lr: float, momentum: float, weight_decay: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(new parameter, new inertia): I <- m I + lr (g + wd P); P <- P - I."""
    parameter, grad, inertia = _t(parameter), _t(grad), _t(inertia)
    inertia = momentum * inertia + lr * (grad + weight_decay * parameter)
    return parameter - inertia, inertia
