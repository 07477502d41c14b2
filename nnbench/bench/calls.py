"""The timed calls: one convolution pass, one Conv2D layer, one training step, one GEMM.

Each builder draws its operands outside the timed function and returns a ``TimedCall``:
``fn()`` makes exactly one call of the code under test; ``check(result)`` compares the result
with the float64 reference through the verification core and returns its ``Verdict`` (the same
ids and bounds as the unit tests); ``flops`` credits the call.

All three convolution passes are the same multiply-adds arranged differently (assignment
section 5.7), so each is credited with the forward's FLOPs, ``2 * n * c * oh * ow * d * kh * kw``;
a Conv2D forward + backward with three times that.

``gemm_reference_call`` is the bare numpy GEMM of a layer's im2col shape, (c, d*kh*kw) @
(d*kh*kw, n*oh*ow), with the BLAS's own threads: the reference line of the scaling group.
``profile_call`` runs a call once while ``kernels._profile`` records where its time goes and
which GEMMs it ran, and returns the breakdown with a function that replays those GEMMs alone
(the backend's own bound).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import kernels
from kernels import _profile
from nnbench.verify import ConvCase, Verdict, compare, operands, result_verdict, seed_for
from nnbench.verify.cases import check_pass

__all__ = [
    "STEP_MODELS",
    "StepModel",
    "TimedCall",
    "Unsupported",
    "cifar10_step_model",
    "gemm_reference_call",
    "layer_call",
    "make_call",
    "profile_call",
    "sgemm_call",
    "train_step_call",
    "twin_step_call",
]


class Unsupported(Exception):
    """The backend declared the case out of its reach; the message is its reason."""


@dataclass
class TimedCall:
    """A call to time (``fn``, no arguments), its check and its FLOPs.

    ``check(result)`` returns a ``Verdict`` (or a list of them, for several tensors) after
    asserting nothing itself: the caller decides what a failed verdict does.
    """

    fn: Callable[[], object]
    check: Callable[[object], Verdict | list[Verdict]]
    flops: int

    def __call__(self):
        return self.fn()


def make_call(backend: str, case: ConvCase, pass_: str) -> TimedCall:
    """One ``pass_`` of ``case`` through the public ``kernels`` function on ``backend``.

    The operands come from ``nnbench.verify.operands(case)`` (seeded from the case id, so every
    backend of a group sees the same numbers and the reference is computed once). Raises
    ``Unsupported`` with the backend's reason.
    """
    check_pass(pass_)
    impl = kernels.get(backend)
    reason = case.unsupported_by(impl)
    if reason:
        raise Unsupported(reason)
    ops = operands(case)
    fn = functools.partial(
        kernels.PASS_FUNCTIONS[pass_], *ops.arguments(pass_), case.padding, backend=impl
    )
    name = f"{backend} {pass_} {case.id}"

    def check(result) -> Verdict:
        ops.assert_unchanged(name)
        return result_verdict(name, result, case, pass_, backend, ops)

    return TimedCall(fn, check, case.flops)


def layer_call(backend: str, case: ConvCase) -> TimedCall:
    """One ``Conv2D`` forward + backward on ``backend``.

    The case must have 'same' padding and a square odd kernel (what ``Conv2D`` computes).
    ``fn()`` returns (outputs, grad_inputs); ``check`` compares them and the layer's
    ``kernels_grad`` and ``biases_grad`` with the reference. FLOPs: three convolutions.
    """
    from nnbench import Conv2D

    if not case.same_padding:
        raise ValueError(f"Conv2D computes 'same' padding with square odd kernels, not {case.id}")
    reason = case.unsupported_by(backend)
    if reason:
        raise Unsupported(reason)
    n, d, h, w = case.input_shape
    c, _, k, _ = case.kernel_shape
    layer = Conv2D(c, kernel_size=k, input_shape=(d, h, w), kernel=backend)
    layer.build(None, dtype=case.dtype)
    ops = operands(case)
    layer.kernels[...] = ops.kernels
    layer.biases[...] = np.linspace(-1.0, 1.0, c)
    x, g = ops.x, ops.grad_outputs

    def fn():
        outputs = layer.forward(x)
        return outputs, layer.backward(g)

    name = f"{backend} layer {case.id}"

    def check(result) -> list[Verdict]:
        outputs, grad_in = result
        ops.assert_unchanged(name)
        _, _, oh, ow = case.output_shape
        expected = {
            "outputs": (outputs, ops.reference("forward") + layer.biases[:, None, None], "forward"),
            "grad_inputs": (grad_in, ops.reference("grad_inputs"), "grad_inputs"),
            "kernels_grad": (layer.kernels_grad, ops.reference("grad_kernels"), "grad_kernels"),
        }
        verdicts = [
            compare(
                f"{name} {key}",
                actual,
                reference,
                dtype=case.dtype,
                backend=backend,
                reduction=case.reduction_length(pass_),
            )
            for key, (actual, reference, pass_) in expected.items()
        ]
        verdicts.append(
            compare(
                f"{name} biases_grad",
                layer.biases_grad,
                g.astype(np.float64).sum(axis=(0, 2, 3)),
                dtype=case.dtype,
                backend=backend,
                reduction=n * oh * ow,
            )
        )
        return verdicts

    return TimedCall(fn, check, 3 * case.flops)


@dataclass(frozen=True)
class StepModel:
    """A recipe model to time one training step of.

    ``build(kernel)`` returns the untrained model; ``uses_kernel`` says whether it has Conv2D
    layers (so whether the backend matters); ``conv_cases`` lists their shapes at the batch;
    ``twin`` (CIFAR-10 only) is the recipe's preset, for the plain-torch twin.
    """

    name: str
    build: Callable[[str | None], object]
    input_shape: tuple[int, ...]  # one sample, no batch axis
    batch_size: int
    uses_kernel: bool
    conv_cases: Callable[[], list]
    twin: str | None = None


def cifar10_step_model(preset: str) -> StepModel:
    """The CIFAR-10 recipe ``preset`` as a ``StepModel`` (its plain-torch twin included)."""
    from nnbench import recipes
    from nnbench.bench.cases import recipe_cases

    return StepModel(
        name=f"cifar10-{preset}",
        build=lambda kernel: recipes.build_cifar10_model(kernel=kernel, preset=preset),
        input_shape=(3, 32, 32),
        batch_size=recipes.cifar10_recipe(preset).batch_size,
        uses_kernel=True,
        conv_cases=lambda: recipe_cases(preset),
        twin=preset,
    )


def _mnist_step_model() -> StepModel:
    from nnbench import recipes

    return StepModel(
        name="mnist",
        build=lambda kernel: recipes.build_mnist_model(),
        input_shape=(784,),
        batch_size=recipes.MNIST.batch_size,
        uses_kernel=False,
        conv_cases=list,
    )


#: The models whose training step is benchmarked, by name (built lazily: recipes import the engine).
STEP_MODELS: dict[str, Callable[[], StepModel]] = {
    "cifar10-fast": functools.partial(cifar10_step_model, "fast"),
    "mnist": _mnist_step_model,
}


def _step_model(model: str | StepModel) -> StepModel:
    return STEP_MODELS[model]() if isinstance(model, str) else model


def train_step_call(model: str | StepModel, backend: str | None) -> TimedCall:
    """One optimizer step (forward, loss gradient, backward, update) of a whole recipe model.

    ``backend`` runs every Conv2D (ignored by models without one). The batch is random float32
    data with random labels at the recipe's batch size, seeded from the model's name. ``fn()``
    returns the batch loss; ``check`` fails unless the loss and every parameter are finite.
    FLOPs: three times the forward FLOPs of the Conv2D and Dense layers.
    """
    from nnbench import recipes

    spec = _step_model(model)
    if spec.uses_kernel:
        for case in spec.conv_cases():
            reason = case.unsupported_by(backend)
            if reason:
                raise Unsupported(f"{case.label}: {reason}")
    net = spec.build(backend if spec.uses_kernel else None)
    if tuple(net.input_shape) != spec.input_shape:
        raise ValueError(f"{spec.name}: model input {net.input_shape} != {spec.input_shape}")
    x, y = _step_batch(spec, net.output_shape[0])

    def fn() -> float:
        loss, _ = net.train_on_batch(x, y)
        return loss

    name = f"{spec.name} step on {backend}"

    def check(loss) -> Verdict:
        bad = [key for key, value in net.parameters().items() if not np.isfinite(value).all()]
        problem = (
            f"loss is {loss}"
            if not math.isfinite(loss)
            else f"parameter {bad[0]} is not finite"
            if bad
            else None
        )
        return Verdict(name, problem is None, 0.0, 0.0, 0.0, False, problem=problem)

    flops = 3 * recipes.model_forward_flops(net) * spec.batch_size
    return TimedCall(fn, check, flops)


def _step_batch(spec: StepModel, classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed_for(spec.name))
    x = rng.standard_normal((spec.batch_size, *spec.input_shape), dtype=np.float32)
    return x, rng.integers(0, classes, size=spec.batch_size)


def twin_step_call(model: str | StepModel) -> TimedCall:
    """One training step of the plain-torch twin of a CIFAR-10 recipe, on the same batch as
    ``train_step_call`` (flips, forward, loss, backward, SGD with momentum and weight decay)."""
    from nnbench import recipes, torch_twin

    spec = _step_model(model)
    if spec.twin is None:
        raise ValueError(f"{spec.name} has no plain-torch twin")
    x, y = _step_batch(spec, 10)
    step = torch_twin.step_function(spec.twin, x, y)

    def check(loss) -> Verdict:
        problem = None if math.isfinite(loss) else f"loss is {loss}"
        return Verdict(f"{spec.name} torch twin step", problem is None, 0.0, 0.0, 0.0, False,
                       problem=problem)  # fmt: skip

    return TimedCall(step, check, 3 * recipes.model_forward_flops(spec.build("torch")) * len(x))


def sgemm_call(n: int = 2048) -> TimedCall:
    """One float32 numpy ``a @ b`` of two n x n matrices (2 n^3 FLOPs), the calibration call."""
    rng = np.random.default_rng(seed_for(f"sgemm{n}"))
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    rows = slice(0, min(n, 8))  # a few rows in float64 suffice to catch a wrong product

    def check(result) -> Verdict:
        return compare(
            f"sgemm {n}",
            np.asarray(result)[rows],
            a[rows].astype(np.float64) @ b,
            dtype="float32",
            backend="im2col",  # a direct BLAS sum: the direct backends' entry
            reduction=n,
        )

    return TimedCall(functools.partial(np.matmul, a, b), check, 2 * n**3)


def gemm_reference_call(case: ConvCase) -> TimedCall:
    """The bare GEMM of ``case``'s im2col forward: (c, d*kh*kw) @ (d*kh*kw, n*oh*ow), float32,
    one numpy call on the BLAS's own threads (no copies around it)."""
    n, c, oh, ow = case.output_shape
    _, d, kh, kw = case.kernel_shape
    rng = np.random.default_rng(seed_for(f"gemm {case.id}"))
    a = rng.standard_normal((c, d * kh * kw), dtype=np.float32)
    b = rng.standard_normal((d * kh * kw, n * oh * ow), dtype=np.float32)
    out = np.empty((c, n * oh * ow), np.float32)
    columns = slice(0, min(n * oh * ow, 8))

    def check(result) -> Verdict:
        return compare(
            f"gemm {case.id}",
            np.asarray(result)[:, columns],
            a.astype(np.float64) @ b[:, columns],
            dtype="float32",
            backend="im2col",
            reduction=d * kh * kw,
        )

    return TimedCall(functools.partial(np.matmul, a, b, out=out), check, case.flops)


def profile_call(fn: Callable[[], object]) -> tuple[dict[str, float], int, Callable | None]:
    """Run ``fn`` once under ``kernels._profile``: (seconds per stage summed over threads,
    how many GEMM calls it made, a function replaying those GEMMs alone or None if none)."""
    with _profile.profiled() as profile:
        fn()
    stages = {name: float(seconds) for name, seconds in sorted(profile.seconds.items())}
    replay = _profile.replay_plan(profile) if profile.gemms else None
    return stages, len(profile.gemms), replay
