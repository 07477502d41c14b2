"""Independent torch reference for the nnbench engine (used by the tests).

Each function reimplements one layer, loss or optimizer step of the assignment with torch ops,
taking numpy arrays or torch tensors, so torch autograd in float64 gives forward values and
gradients to compare against. This package imports only numpy and torch; it never imports the
code it checks.
"""

from reference.layers import (
    batchnorm,
    conv2d,
    convolve_with_gradients,
    cross_entropy,
    dense,
    dropout,
    flatten,
    pool2d,
    random_flip,
    relu,
    sgd_momentum_step,
    sgd_step,
    softmax,
    softmax_cross_entropy,
    tensor,
)

__all__ = [
    "batchnorm",
    "conv2d",
    "convolve_with_gradients",
    "cross_entropy",
    "dense",
    "dropout",
    "flatten",
    "pool2d",
    "random_flip",
    "relu",
    "sgd_momentum_step",
    "sgd_step",
    "softmax",
    "softmax_cross_entropy",
    "tensor",
]
