"""Every target and limit of the project, with its meaning, in one place.

The accuracy CLI, the benchmark suite, the report and the tests read them from here; nothing
else writes a threshold down. Two kinds:

* **limits** are the assignment's floor (``LIMITS``): a run that misses one failed;
* **targets** are what this project aims for (``ACCURACY_TARGETS``, ``SPEED_TARGETS``): the
  report gives each one a met / MISSED verdict with the measured value, and says so plainly when
  the measurement is missing.

``Target.scope`` says which runs a target is judged on, so that one sentence cannot mean two
things: ``"fastest"`` is the best run over every kernel; a backend name is that backend's run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "ACCURACY_TARGETS",
    "LIMITS",
    "SMOKE_FLOORS",
    "SPEED_TARGETS",
    "AccuracyTarget",
    "Limit",
    "SpeedTarget",
    "accuracy_levels",
    "judge",
]


@dataclass(frozen=True)
class Limit:
    """The assignment's floor for ``dataset``: test accuracy above ``accuracy`` within
    ``seconds`` of training (per-epoch evaluation included)."""

    dataset: str
    accuracy: float
    seconds: float

    @property
    def name(self) -> str:
        return f"{_TITLES[self.dataset]} > {self.accuracy:.0%} within {_duration(self.seconds)}"


@dataclass(frozen=True)
class AccuracyTarget:
    """Reach ``accuracy`` on ``dataset`` within ``seconds``, judged on ``scope``'s run
    (``"fastest"``: the quickest of every kernel's runs; else that kernel's run), with the
    recipe ``preset`` (None: any)."""

    dataset: str
    accuracy: float
    seconds: float
    scope: str = "fastest"
    preset: str | None = None

    @property
    def name(self) -> str:
        who = "fastest kernel" if self.scope == "fastest" else self.scope
        if self.dataset == "mnist":
            who = "dense-only net"
        preset = f" ({self.preset} preset)" if self.preset else ""
        return (
            f"{_TITLES[self.dataset]}, {who}{preset}: ≥ {self.accuracy:.0%} in ≤ "
            f"{_duration(self.seconds)}"
        )

    def applies_to(self, dataset: str, kernel: str | None, preset: str | None) -> bool:
        """Whether a run of ``kernel`` on ``dataset`` with ``preset`` is judged for this target
        (every run is a candidate for a ``"fastest"`` target)."""
        return (
            dataset == self.dataset
            and (self.scope == "fastest" or kernel == self.scope)
            and (self.preset is None or preset == self.preset)
        )


@dataclass(frozen=True)
class SpeedTarget:
    """A speed target: ``metric`` of ``scope`` must be ``>=`` (``higher=True``) or ``<=`` the
    ``threshold``. ``metric`` names what the report computes (see ``METRICS``)."""

    key: str
    metric: str
    scope: str
    threshold: float
    higher: bool = True

    @property
    def name(self) -> str:
        return METRICS[self.metric].format(scope=self.scope, threshold=self.threshold)


#: What each speed metric is, as a sentence with the target in it.
METRICS = {
    "ratio_to_torch": "{scope} ≥ {threshold:g}× torch (geometric mean of forward, grad_inputs "
    "and grad_kernels on the recipe layers, all cores)",
    "distance_to_bound": "{scope} within {threshold:g}× of its own GEMMs' time on the recipe "
    "layers (geometric mean, all cores)",
    "scaling_vs_gemm": "{scope}'s speed-up from 1 thread to all cores ≥ {threshold:g}× that of "
    "a bare GEMM of the same size (recipe layers, geometric mean)",
    "slowdown_with_threads": "{scope} no slower with more threads: each step up the thread "
    "ladder, and from the cores to twice the cores (oversubscribed), ≤ {threshold:g}× the time "
    "before it (recipe layers, geometric mean)",
    "engine_overhead": "engine + torch kernel ≤ {threshold:g}× the plain-torch twin (CIFAR-10 "
    "fast training step, interleaved, medians)",
    "faster_than_im2col": "{scope} forward ≥ {threshold:g}× im2col on the recipe's conv2 and "
    "conv3 and the 64-channel 3x3 layer (all cores)",
    "auto_vs_fastest": "auto within {threshold:g}× of the fastest single backend on every "
    "benchmarked layer and pass (warmed up)",
    "auto_step_vs_fastest": "the CIFAR-10 fast training step with auto within {threshold:g}× "
    "of the fastest single-backend model",
}

_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}

LIMITS: dict[str, Limit] = {
    "mnist": Limit("mnist", 0.90, 600.0),
    "cifar10": Limit("cifar10", 0.70, 3600.0),
}

#: Test accuracy a ``--smoke`` run (a few thousand images, ``accuracy.SMOKE_EPOCHS`` epochs)
#: must pass to count as having learned at all (chance is 10%); CI asserts it.
SMOKE_FLOORS: dict[str, float] = {"mnist": 0.80, "cifar10": 0.25}

ACCURACY_TARGETS: tuple[AccuracyTarget, ...] = (
    AccuracyTarget("mnist", 0.98, 60.0),
    AccuracyTarget("cifar10", 0.70, 180.0),
    AccuracyTarget("cifar10", 0.80, 900.0),
    AccuracyTarget("cifar10", 0.70, 300.0, scope="im2col"),
)


def accuracy_levels(dataset: str) -> tuple[float, ...]:
    """The test accuracies that ``dataset``'s limit and targets name, ascending."""
    levels = {LIMITS[dataset].accuracy} | {
        t.accuracy for t in ACCURACY_TARGETS if t.dataset == dataset
    }
    return tuple(sorted(levels))


SPEED_TARGETS: tuple[SpeedTarget, ...] = (
    SpeedTarget("im2col_vs_torch", "ratio_to_torch", "im2col", 0.5),
    SpeedTarget("loop_vs_torch", "ratio_to_torch", "loop", 0.4),
    SpeedTarget("im2col_bound", "distance_to_bound", "im2col", 1.5, higher=False),
    SpeedTarget("im2col_scaling", "scaling_vs_gemm", "im2col", 0.8),
    SpeedTarget("loop_scaling", "scaling_vs_gemm", "loop", 0.8),
    SpeedTarget("fft_scaling", "scaling_vs_gemm", "fft", 0.8),
    SpeedTarget("im2col_no_slowdown", "slowdown_with_threads", "im2col", 1.1, higher=False),
    SpeedTarget("loop_no_slowdown", "slowdown_with_threads", "loop", 1.1, higher=False),
    SpeedTarget("fft_no_slowdown", "slowdown_with_threads", "fft", 1.1, higher=False),
    SpeedTarget("engine_overhead", "engine_overhead", "torch", 1.15, higher=False),
    SpeedTarget("winograd_vs_im2col", "faster_than_im2col", "winograd", 1.2),
    SpeedTarget("auto_vs_fastest", "auto_vs_fastest", "auto", 1.15, higher=False),
    SpeedTarget("auto_step", "auto_step_vs_fastest", "auto", 1.05, higher=False),
)


def judge(value: float | None, threshold: float, higher: bool = True) -> str:
    """``"met"``, ``"MISSED"``, or ``"not measured"`` (no value, or not a number)."""
    if value is None or not math.isfinite(value):
        return "not measured"
    met = value >= threshold if higher else value <= threshold
    return "met" if met else "MISSED"


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
