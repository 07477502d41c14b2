"""A whole ``Conv2D`` forward + backward (both gradients) per backend, on the recipe's layers.

Credited with three convolutions' FLOPs; grouped per layer shape (``<case id> layer``).
"""

from __future__ import annotations

import pytest

import kernels
from nnbench import bench

CASES = {case.id: case for case in bench.recipe_cases()}


def _params():
    for case in CASES.values():
        for backend in kernels.available():
            yield pytest.param(backend, case.id, id=f"{backend}-layer-{case.id}")


@pytest.mark.parametrize(("backend", "case_id"), list(_params()))
def test_conv2d_layer(measure, backend, case_id):
    case = CASES[case_id]
    try:
        call = bench.layer_call(backend, case)
    except bench.Unsupported as exc:
        pytest.skip(f"{backend} does not support {case.id}: {exc}")
    measure(call, group=f"{case.id} layer", backend=backend, pass_="layer", case=case,
            flops=call.flops)  # fmt: skip
