"""One optimizer step (forward, loss gradient, backward, update) of a whole recipe model.

The CIFAR-10 recipe runs once per backend; the Dense-only MNIST model has no convolution, so it
runs once, recorded as backend ``numpy``. Each model is one group (``step <model>``). ``auto``'s
rounds also time its own step and that of every single-backend model, in a new order each round
(``beside_median_s``, ``beside_rounds_s``): auto against the fastest model in the same machine
state.
"""

from __future__ import annotations

import contextlib

import pytest

import kernels
from nnbench import auto, bench


def _params():
    for name, make in bench.STEP_MODELS.items():
        if make().uses_kernel:
            for backend in [*kernels.available(), "auto"]:
                yield pytest.param(name, backend, id=f"{backend}-step-{name}")
        else:
            yield pytest.param(name, None, id=f"numpy-step-{name}")


@pytest.mark.parametrize(("model", "backend"), list(_params()))
def test_train_step(measure, model, backend):
    spec = bench.STEP_MODELS[model]()
    try:
        call = bench.train_step_call(spec, backend)
    except bench.Unsupported as exc:
        pytest.skip(f"{backend} does not support a layer of {model}: {exc}")
    beside = {}
    if backend == "auto":  # auto's step and every single-backend model's, in the same rounds
        auto.settle(call.fn)  # plans every layer and pass and ends their trials: warmed up
        beside["auto"] = call.fn
        for single in kernels.available():
            with contextlib.suppress(bench.Unsupported):
                beside[single] = bench.train_step_call(spec, single).fn
    measure(
        call,
        group=f"step {model}",
        beside=beside,
        backend=backend or "numpy",
        pass_="step",
        suite="step",
        label=model,
        input_shape=(spec.batch_size, *spec.input_shape),
        dtype="float32",
        flops=call.flops,
    )
