"""Calibration: float32 numpy SGEMM of two 2048 x 2048 matrices, the machine's practical peak.

The report divides every backend's GFLOP/s by this one (% of peak); it runs under the same
thread count as the backends, with the BLAS kernels the machine info names.
"""

from __future__ import annotations

import pytest

from nnbench import bench

SIZE = 2048


@pytest.mark.quick
def test_sgemm(measure):
    call = bench.sgemm_call(SIZE)
    measure(
        call,
        group="sgemm",
        backend="numpy",
        pass_="sgemm",
        suite="sgemm",
        label=f"{SIZE}^3",
        input_shape=(SIZE, SIZE),
        kernel_shape=(SIZE, SIZE),
        dtype="float32",
        flops=call.flops,
    )
