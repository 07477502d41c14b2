"""The benchmark cases: which convolutions the suite times, in named suites.

Every case is a ``nnbench.verify.ConvCase`` (its id is the same in the tests, the benchmarks and
the report); ``suite`` names the list it comes from and ``label`` is its short readable name.

``recipe_cases``       the exact Conv2D layers of a CIFAR-10 recipe at its training batch
``kernel_size_sweep``  k = 1..11, 'same' padding, 32x32 images, at two channel widths: where the
                       FFT backend overtakes the direct ones
``channel_sweep``      3x3 on 16x16 images, d = c from 8 to 128: how GEMM efficiency grows with
                       the reduction length
``batch_sweep``        3x3, 32 -> 32 channels on 16x16 images, n from 1 to 256
``quick_cases``        the recipe layers and k = 3, 7 of the narrow sweep: the report's quick set
``thread_ladder``      1, 2, 4, ... threads up to the cores: the scaling group's thread counts

The sweeps are laid out so no two cases share an id: every (id, pass) is one group.
"""

from __future__ import annotations

from collections.abc import Iterable

import kernels
from nnbench.verify import ConvCase

SUITES = ("recipe", "kernel_size", "channels", "batch")

KERNEL_SIZES = (1, 3, 5, 7, 9, 11)
#: (n, d = c) of the kernel-size sweep on 32x32 images: a narrow width, and a wider one at a
#: smaller batch (same order of FLOPs) where FFT's per-frequency products win more.
KERNEL_SWEEP_WIDTHS = ((32, 32), (8, 64))
CHANNEL_WIDTHS = (8, 16, 32, 64, 128)  # d = c, at [32, d, 16, 16] with 3x3
BATCH_SIZES = (1, 4, 16, 64, 256)  # n, at [n, 32, 16, 16] -> 32 with 3x3
#: Kernel sizes of the quick set's sweep: below and above the FFT crossover (k = 11 alone would
#: take the loop backend about a minute on 2 cores).
QUICK_KERNEL_SIZES = (3, 7)


class BenchCase(ConvCase):
    """A ``ConvCase`` with the suite it belongs to (``suite`` is not part of the id)."""

    suite: str

    def __init__(self, suite: str, label: str, input_shape, kernel_shape, padding: int):
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
        super().__init__(input_shape, kernel_shape, padding, "float32", label)
        object.__setattr__(self, "suite", suite)

    def as_dict(self) -> dict:
        return {"suite": self.suite, **super().as_dict()}


def recipe_cases(preset: str = "fast") -> list[BenchCase]:
    """The Conv2D layers of the CIFAR-10 ``preset`` at its training batch size, in model order.

    Layers of identical shape are listed once, labelled with all their names ("best/conv1+2").
    """
    from nnbench import recipes

    recipe = recipes.cifar10_recipe(preset)
    # The shapes do not depend on the backend; any available one builds the model.
    model = recipes.build_cifar10_model(kernel=kernels.available()[0], preset=preset)
    shapes = recipes.conv_layer_shapes(model, recipe.batch_size)
    by_id: dict[str, tuple[list[int], dict]] = {}
    for index, shape in enumerate(shapes, start=1):
        key = ConvCase(shape["input"], shape["kernels"], shape["padding"]).id
        by_id.setdefault(key, ([], shape))[0].append(index)
    return [
        BenchCase(
            "recipe",
            f"{preset}/conv" + "+".join(map(str, numbers)),
            shape["input"],
            shape["kernels"],
            shape["padding"],
        )
        for numbers, shape in by_id.values()
    ]


def kernel_size_sweep(sizes: Iterable[int] = KERNEL_SIZES) -> list[BenchCase]:
    """k x k kernels with 'same' padding on 32x32 images, at each width of KERNEL_SWEEP_WIDTHS."""
    return [
        BenchCase(
            "kernel_size", f"k{k}/c{width}", (n, width, 32, 32), (width, width, k, k), (k - 1) // 2
        )
        for n, width in KERNEL_SWEEP_WIDTHS
        for k in sizes
    ]


def channel_sweep(widths: Iterable[int] = CHANNEL_WIDTHS) -> list[BenchCase]:
    """3x3 'same' convolutions of [32, d, 16, 16] to d channels."""
    return [BenchCase("channels", f"c{d}", (32, d, 16, 16), (d, d, 3, 3), 1) for d in widths]


def batch_sweep(batches: Iterable[int] = BATCH_SIZES) -> list[BenchCase]:
    """3x3 'same' convolutions of [n, 32, 16, 16] to 32 channels."""
    return [BenchCase("batch", f"n{n}", (n, 32, 16, 16), (32, 32, 3, 3), 1) for n in batches]


def all_cases() -> list[BenchCase]:
    """Every case of the benchmark suite; ``ValueError`` if two share an id."""
    cases = recipe_cases() + kernel_size_sweep() + channel_sweep() + batch_sweep()
    seen: dict[str, BenchCase] = {}
    for case in cases:
        if case.id in seen:
            raise ValueError(f"case id {case.id} is in both {seen[case.id].label} and {case.label}")
        seen[case.id] = case
    return cases


def quick_cases() -> list[BenchCase]:
    """The report's quick set: the recipe layers, and k = 3 and 7 of the narrow sweep."""
    narrow = KERNEL_SWEEP_WIDTHS[0][1]
    sweep = kernel_size_sweep(QUICK_KERNEL_SIZES)
    return recipe_cases() + [case for case in sweep if case.kernel_shape[0] == narrow]


def thread_ladder(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself: the thread counts of the scaling group."""
    ladder = [1]
    while ladder[-1] * 2 <= cores:
        ladder.append(ladder[-1] * 2)
    if ladder[-1] != cores:
        ladder.append(cores)
    return ladder


#: How many times the cores the scaling group's oversubscribed test asks for.
OVERSUBSCRIPTION = 2


def oversubscribed_threads(cores: int) -> int:
    """The thread count the scaling group's oversubscribed test pins: ``OVERSUBSCRIPTION``
    times the cores, more threads than there are cores to run them."""
    return OVERSUBSCRIPTION * cores
