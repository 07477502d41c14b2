"""Cross-entropy (section 2.2.1) and the fused, stable softmax + cross-entropy of section 5.5."""

from __future__ import annotations

import math

import numpy as np

from nnbench.base import Loss

__all__ = ["EPS", "CategoricalCrossentropy", "CrossEntropy", "softmax_cross_entropy"]

#: Lower clip of predicted probabilities before the logarithm (the assignment's ``eps``).
EPS = 1e-9


class CrossEntropy(Loss):
    """L = -(1/n) sum_i sum_j y_gt[i, j] ln(max(eps, y_pred[i, j])) for (n, classes) arrays.

    ``value`` returns shape (1,); ``gradient`` returns -y_gt / max(eps, y_pred) / n, the
    section 5.4 derivative already divided by the batch size. Results have the dtype of
    ``y_pred``; ``y_gt`` (one-hot or any distribution) is read in that dtype.
    """

    def __init__(self, eps: float = EPS):
        if not (isinstance(eps, (int, float)) and 0 < eps < 1):
            raise ValueError(f"eps must be a float in (0, 1), got {eps!r}")
        self.eps = float(eps)

    def value_impl(self, y_gt, y_pred):
        y_gt = y_gt.astype(y_pred.dtype, copy=False)
        log_probs = np.log(np.maximum(y_pred, self.eps))
        total = np.einsum("nd,nd->", y_gt, log_probs)
        return np.array([-total / y_pred.shape[0]], dtype=y_pred.dtype)

    def gradient_impl(self, y_gt, y_pred):
        y_gt = y_gt.astype(y_pred.dtype, copy=False)
        grad = y_gt / np.maximum(y_pred, self.eps)
        grad *= -1 / y_pred.shape[0]
        return grad


#: The assignment's interface calls it by this name too.
CategoricalCrossentropy = CrossEntropy


def softmax_cross_entropy(
    y_gt: np.ndarray, logits: np.ndarray, eps: float = EPS, *, with_grad: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """CrossEntropy(y_gt, Softmax(logits)) and its gradient w.r.t. the logits, computed stably.

    log softmax(z) = (z - max z) - ln sum exp(z - max z) never overflows; the loss clips it at
    ln(eps), exactly as ``CrossEntropy`` clips the probabilities, so both paths report the same
    value. The gradient w.r.t. z is (softmax(z) * sum_j y_gt[:, j] - y_gt) / n, which is
    (softmax - y_gt) / n for one-hot labels: what the unfused Softmax.backward of
    CrossEntropy.gradient gives wherever no probability is clipped, without dividing by tiny
    probabilities. Where a labelled probability is below eps it stays the gradient of the
    unclipped loss (the unfused path scales it down by p / eps there), so a confidently wrong
    sample keeps pulling.

    Returns (loss (1,), probabilities (n, classes), grad_logits (n, classes) or None).
    """
    n = logits.shape[0]
    y_gt = y_gt.astype(logits.dtype, copy=False)
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    sums = probs.sum(axis=1, keepdims=True)
    probs /= sums
    log_probs = shifted
    log_probs -= np.log(sums)
    np.maximum(log_probs, math.log(eps), out=log_probs)
    loss = np.array([-np.einsum("nd,nd->", y_gt, log_probs) / n], dtype=logits.dtype)
    if not with_grad:
        return loss, probs, None
    grad = probs * y_gt.sum(axis=1, keepdims=True)
    grad -= y_gt
    grad *= 1 / n
    return loss, probs, grad
