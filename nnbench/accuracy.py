"""End-to-end accuracy runs: ``python -m nnbench.accuracy``.

Trains the recipes of ``nnbench.recipes`` on the full training set, evaluates on the test set,
and checks the assignment's limits: MNIST > 90% test accuracy within 600 s, CIFAR-10 > 70%
within 3600 s (training plus evaluation, data loading excluded). It exits non-zero and says
what fell short otherwise.

The accuracy-vs-time curve uses the test set as the per-epoch validation set: every epoch ends
with a test-set evaluation whose time counts in the elapsed seconds, and "time to X%" is the
elapsed time at the end of the first epoch whose test accuracy reached X. Hyperparameters were
chosen beforehand and are not tuned on these curves during a run.

Each run writes a new file in ``--out`` atomically, never replacing one (committed or not)::

    accuracy-<dataset>-<kernel>[-<preset>][-smoke]-seed<seed>-<start>.json

``<start>`` is the run's UTC start time (``20260101T120000Z``); a name already taken gets ``-2``,
``-3``, ... The report uses the newest run of each configuration. The file holds the machine the
run ran on, the history, the time to each threshold and the final accuracy. Every argument, and
whether ``--out`` can be written, is checked before any work starts.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

import kernels
from nnbench import datasets, policy, recipes, runtime
from nnbench._io import atomic_create_json, unwritable_reason
from nnbench.machine import cpu_count, machine_info, pinned_threads

SCHEMA = "nnbench.accuracy/1"
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
SMOKE = {"mnist": (3000, 1000), "cifar10": (5000, 1000)}  # train / test images in --smoke
SMOKE_EPOCHS = 2
#: Interleaved engine and plain-torch training steps timed for the overhead ratio (medians).
STEP_ROUNDS = 30


def targets_for(dataset: str, kernel: str, preset: str, reached: dict) -> list[dict]:
    """The project's accuracy targets (``nnbench.policy``) this run is judged for, each with
    whether this run met it. A ``"fastest"`` target is judged by the report over every
    kernel's run; this run's ``met`` says whether it would meet it."""
    return [
        {
            "name": target.name,
            "accuracy": target.accuracy,
            "seconds": target.seconds,
            "scope": target.scope,
            "met": (reached.get(f"{target.accuracy:g}") or float("inf")) <= target.seconds,
        }
        for target in policy.ACCURACY_TARGETS
        if target.applies_to(dataset, kernel, preset)
    ]


def time_to_accuracy(history: list[dict], thresholds=THRESHOLDS) -> dict[str, float | None]:
    """Elapsed seconds at the first epoch whose validation accuracy reached each threshold."""
    reached: dict[str, float | None] = {}
    for threshold in thresholds:
        hit = next(
            (
                h["elapsed_seconds"]
                for h in history
                if h.get("valid_accuracy") is not None and h["valid_accuracy"] >= threshold
            ),
            None,
        )
        reached[f"{threshold:g}"] = hit
    return reached


def run_one(
    dataset: str,
    kernel: str,
    *,
    seed: int,
    data_dir,
    preset: str,
    smoke: bool,
    epochs: int | None,
    verbose: bool,
    compare_torch: bool,
) -> dict:
    """Train and evaluate one (dataset, kernel) pair; return the results record."""
    machine = machine_info()  # stamped when the run starts: the code and settings it ran with
    np.random.seed(seed)  # the engine draws its initial weights and dropout masks from here
    x_train, y_train, x_test, y_test = _load(dataset, data_dir, smoke)
    limit = {"accuracy": policy.LIMITS[dataset].accuracy, "seconds": policy.LIMITS[dataset].seconds}
    start = time.perf_counter()
    if dataset == "mnist":
        model = recipes.train_mnist_model(
            x_train,
            y_train,
            x_test,
            y_test,
            epochs=SMOKE_EPOCHS if smoke else epochs,
            time_budget=limit["seconds"],
            verbose=verbose,
        )
    else:
        model = recipes.train_cifar10_model(
            x_train,
            y_train,
            x_test,
            y_test,
            kernel=kernel,
            preset=preset,
            epochs=SMOKE_EPOCHS if smoke else epochs,
            time_budget=limit["seconds"],
            verbose=verbose,
        )
    train_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(x_test, y_test, batch_size=500)
    evaluate_seconds = time.perf_counter() - t0
    wall = time.perf_counter() - start

    history = [dict(h) if isinstance(h, dict) else vars(h).copy() for h in model.history]
    shortfalls = []
    if not test_accuracy > limit["accuracy"]:
        shortfalls.append(
            f"{dataset}: test accuracy {test_accuracy:.4f} is not above {limit['accuracy']:.2f}"
        )
    if wall > limit["seconds"]:
        shortfalls.append(f"{dataset}: train+evaluate took {wall:.0f} s > {limit['seconds']:.0f} s")
    reached = time_to_accuracy(history)
    if smoke:
        floor = policy.SMOKE_FLOORS[dataset]
        shortfalls = (
            []
            if test_accuracy > floor
            else [f"{dataset} smoke: test accuracy {test_accuracy:.4f} is not above {floor:.2f}"]
        )
    targets = targets_for(dataset, kernel, "mnist" if dataset == "mnist" else preset, reached)
    record = {
        "schema": SCHEMA,
        "dataset": dataset,
        "kernel": kernel,
        "preset": "mnist" if dataset == "mnist" else preset,
        "seed": seed,
        "smoke": smoke,
        "train_size": len(x_train),
        "test_size": len(x_test),
        "machine": machine,
        "limit": limit,
        "targets": targets,
        "history": history,
        "time_to_accuracy": reached,
        "final_test_accuracy": float(test_accuracy),
        "final_test_loss": float(test_loss),
        "train_seconds": train_seconds,
        "evaluate_seconds": evaluate_seconds,
        "wall_seconds": wall,
        "passed": not shortfalls,
        "shortfalls": shortfalls,
        "torch_twin": None,
    }
    if compare_torch and dataset == "cifar10" and kernel == "torch":
        from nnbench import torch_twin

        np.random.seed(seed)
        twin = torch_twin.train_twin(
            x_train,
            y_train,
            x_test,
            y_test,
            preset=preset,
            seed=seed,
            epochs=SMOKE_EPOCHS if smoke else epochs,
            verbose=verbose,
        )
        engine_train = history[-1]["elapsed_seconds"] if history else train_seconds
        twin["run_ratio"] = engine_train / twin["seconds"]  # one run of each, in turn
        twin.update(step_overhead(preset))
        record["torch_twin"] = twin
    return record


def step_overhead(preset: str, rounds: int = STEP_ROUNDS) -> dict:
    """Engine (torch kernel) and plain-torch training steps of the ``preset`` network on the
    same batch, interleaved ``rounds`` times: the medians and their ratio (``ratio``)."""
    import statistics

    from nnbench import bench

    spec = bench.cifar10_step_model(preset)
    engine = bench.train_step_call(spec, "torch")
    twin = bench.twin_step_call(spec)
    engine_times, twin_times = bench.interleaved(engine.fn, twin.fn, rounds=rounds)
    engine_ms = statistics.median(engine_times) * 1e3
    twin_ms = statistics.median(twin_times) * 1e3
    return {
        "step_rounds": rounds,
        "step_engine_ms": engine_ms,
        "step_twin_ms": twin_ms,
        "ratio": engine_ms / twin_ms,
    }


def _load(dataset: str, data_dir, smoke: bool):
    if dataset == "mnist":
        x_train, y_train, x_test, y_test = datasets.load_mnist(data_dir)
        prepared = datasets.preprocess_mnist(x_train, y_train, x_test, y_test)
    else:
        x_train, y_train, x_test, y_test = datasets.load_cifar10(data_dir)
        prepared = datasets.preprocess_cifar10(x_train, y_train, x_test, y_test)
    if smoke:
        n_train, n_test = SMOKE[dataset]
        xt, yt, xv, yv = prepared
        prepared = xt[:n_train], yt[:n_train], xv[:n_test], yv[:n_test]
    return prepared


def _kernel_list(value: str) -> list[str]:
    """'all' (every backend that computes convolutions), one backend's name, or 'auto'."""
    names = kernels.available() if value == "all" else [value]
    for name in names:
        kernels.get(name)  # unknown or unavailable -> ValueError listing the available ones
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nnbench.accuracy",
        description="Train the MNIST / CIFAR-10 recipes and check the assignment's accuracy and "
        f"time limits ({'; '.join(limit.name for limit in policy.LIMITS.values())}).",
    )
    parser.add_argument(
        "--dataset",
        choices=["mnist", "cifar10", "all"],
        default="all",
        help="which recipes to run (default: %(default)s)",
    )
    parser.add_argument(
        "--kernel",
        default="all",
        help="convolution backend for CIFAR-10: one of "
        f"{', '.join(kernels.available())}, 'auto' (the fastest verified one per layer, "
        "measured) or 'all' (default: %(default)s)",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(recipes.CIFAR10_PRESETS),
        default="fast",
        help="CIFAR-10 recipe preset (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs to train, at least 1 (default: the recipe's own)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of numpy's generator, which draws the initial weights, dropout masks and "
        "flips; 0 to 2**32 - 1 (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="an existing dataset folder (default: $NNBENCH_DATA, else the user cache)",
    )
    parser.add_argument(
        "--out",
        default="reports/results",
        help="folder for the results JSON; each run writes a new file named after its "
        "configuration and start time, never replacing one (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="BLAS and torch threads for every backend, at least 1; more than the cores is "
        "capped at the cores with a warning (default: all cores)",
    )
    parser.add_argument(
        "--compare-torch",
        action="store_true",
        help="with the torch kernel, also train the same network in pure torch and "
        "record the engine/torch time ratio (default: off)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a seconds-long run on a small subset, for CI: checks that the pipeline learns "
        "(default: off)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars (default: off)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed arguments, every one checked (and the output folder found writable) before
    any work starts; a bad one exits with status 2 and a one-line message naming the flag."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if not 0 <= args.seed < 2**32:
        parser.error(f"--seed must be in [0, 2**32 - 1], got {args.seed}")
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1 (or left out for all cores), got {args.threads}")
        cores = cpu_count()
        if args.threads > cores:
            print(
                f"{parser.prog}: warning: --threads {args.threads} is more than the {cores} "
                f"cores this process may use; using {cores}",
                file=sys.stderr,
            )
            args.threads = cores
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        parser.error(
            f"--data-dir {args.data_dir!r} is not a folder: give the folder that holds mnist/ "
            "and cifar-10-batches-bin/, or leave it out to use $NNBENCH_DATA or the user cache"
        )
    problem = unwritable_reason(args.out)
    if problem:
        parser.error(f"--out {args.out!r} cannot hold the results: {problem}")
    try:
        args.kernels = _kernel_list(args.kernel)
    except ValueError as exc:
        parser.error(f"--kernel: {exc}")
    return args


def write_result(out, record: dict, started: str) -> Path:
    """Write ``record`` to a new file in ``out`` named after its configuration and ``started``
    (``-2``, ``-3``, ... appended if that name is taken); an existing result is never replaced."""
    parts = ["accuracy", record["dataset"], record["kernel"]]
    if record["dataset"] == "cifar10" and record["preset"] != "fast":
        parts.append(record["preset"])
    if record["smoke"]:
        parts.append("smoke")
    stem = "-".join([*parts, f"seed{record['seed']}", started])
    for attempt in itertools.count(1):
        name = stem + (f"-{attempt}" if attempt > 1 else "") + ".json"
        try:
            return atomic_create_json(Path(out) / name, record)
        except FileExistsError:
            continue
    raise AssertionError("unreachable")  # pragma: no cover


def main(argv=None) -> int:
    args = parse_args(argv)
    jobs = []
    if args.dataset in ("mnist", "all"):
        jobs.append(("mnist", "none"))
    if args.dataset in ("cifar10", "all"):
        jobs.extend(("cifar10", k) for k in args.kernels)
    failures = []
    runtime.configure()  # before torch is loaded; recorded in every result's machine info
    with pinned_threads(args.threads):
        for dataset, kernel in jobs:
            started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            record = run_one(
                dataset,
                kernel,
                seed=args.seed,
                data_dir=args.data_dir,
                preset=args.preset,
                smoke=args.smoke,
                epochs=args.epochs,
                verbose=not args.quiet,
                compare_torch=args.compare_torch,
            )
            path = write_result(args.out, record, started)
            print(_summary(record, path))
            failures.extend(record["shortfalls"])
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def _summary(record: dict, path: Path) -> str:
    reached = ", ".join(
        f"{float(k):.0%} at {v:.0f} s"
        for k, v in record["time_to_accuracy"].items()
        if v is not None
    )
    line = (
        f"{record['dataset']} kernel={record['kernel']} preset={record['preset']}: test accuracy "
        f"{record['final_test_accuracy']:.4f} in {record['wall_seconds']:.1f} s "
        f"(reached {reached or 'no threshold'}) -> {path}"
    )
    twin = record.get("torch_twin")
    if twin:
        line += (
            f"\n  pure torch: {twin['seconds']:.1f} s; engine/torch per training step = "
            f"{twin['ratio']:.2f}x (medians of {twin['step_rounds']} interleaved steps)"
        )
    return line


if __name__ == "__main__":
    sys.exit(main())
