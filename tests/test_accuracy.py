"""The accuracy pipeline end to end on a small subset (``--smoke``), and its pure helpers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import kernels
from nnbench import Conv2D, accuracy, policy, recipes, torch_twin
from tests.data_fixtures import dataset_root


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_smoke_run_learns_and_writes_results(dataset, data_dir, tmp_path, capsys):
    code = accuracy.main(
        [
            "--smoke",
            "--dataset",
            dataset,
            "--kernel",
            "im2col",
            "--data-dir",
            str(dataset_root(data_dir, dataset)),
            "--out",
            str(tmp_path),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    kernel = "none" if dataset == "mnist" else "im2col"
    (path,) = tmp_path.glob(f"accuracy-{dataset}-{kernel}-smoke-seed0-*.json")
    assert re.fullmatch(r"\d{8}T\d{6}Z", path.stem.rsplit("-", 1)[1])  # the run's start, UTC
    record = json.loads(path.read_text())
    assert code == 0, record["shortfalls"]
    assert record["schema"] == accuracy.SCHEMA
    assert record["smoke"] is True
    # well above chance (10%): the floors are what --smoke itself enforces
    assert record["final_test_accuracy"] > policy.SMOKE_FLOORS[dataset]
    assert len(record["history"]) == accuracy.SMOKE_EPOCHS
    assert record["history"][-1]["elapsed_seconds"] <= record["wall_seconds"]
    assert record["machine"]["cores"] >= 1 and record["machine"]["cpu_model"]
    assert set(record["time_to_accuracy"]) == {f"{t:g}" for t in accuracy.THRESHOLDS}
    assert str(path) in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"


def test_time_to_accuracy_takes_first_epoch_reaching_each_threshold():
    history = [
        {"elapsed_seconds": 10.0, "valid_accuracy": 0.6},
        {"elapsed_seconds": 20.0, "valid_accuracy": 0.75},
        {"elapsed_seconds": 30.0, "valid_accuracy": 0.72},
        {"elapsed_seconds": 40.0, "valid_accuracy": 0.81},
    ]
    reached = accuracy.time_to_accuracy(history, thresholds=(0.5, 0.7, 0.8, 0.9))
    assert reached == {"0.5": 10.0, "0.7": 20.0, "0.8": 40.0, "0.9": None}


def test_time_to_accuracy_ignores_epochs_without_validation():
    reached = accuracy.time_to_accuracy([{"elapsed_seconds": 5.0, "valid_accuracy": None}], (0.5,))
    assert reached == {"0.5": None}


@pytest.mark.parametrize(
    ("dataset", "kernel", "expected"),
    [
        ("mnist", "none", [(0.98, 60.0, "fastest")]),
        ("cifar10", "loop", [(0.70, 180.0, "fastest"), (0.80, 900.0, "fastest")]),
        ("cifar10", "im2col", [(0.70, 180.0, "fastest"), (0.80, 900.0, "fastest"),
                               (0.70, 300.0, "im2col")]),
    ],
)  # fmt: skip
def test_a_run_records_the_policy_targets_it_is_judged_for(dataset, kernel, expected):
    """Targets come from nnbench.policy only; a run is a candidate for every "fastest" target
    and judged for its own kernel's; ``met`` is this run's own result."""
    reached = {"0.7": 200.0, "0.8": None, "0.98": 30.0}
    got = accuracy.targets_for(dataset, kernel, "fast", reached)
    assert [(t["accuracy"], t["seconds"], t["scope"]) for t in got] == expected
    met = {(t["accuracy"], t["seconds"]): t["met"] for t in got}
    assert met.get((0.70, 180.0)) in (False, None) and met.get((0.70, 300.0), True)
    assert all(t["name"] for t in got)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a run starts: argument errors must come before any work."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a run started")

    monkeypatch.setattr(accuracy, "run_one", forbidden)


#: id -> (arguments, with {tmp} for a fresh folder; what the one-line error must say)
BAD_ARGUMENTS = {
    "unknown-kernel": (["--kernel", "no-such-backend"], "--kernel: unknown backend"),
    "unknown-dataset": (["--dataset", "imagenet"], "--dataset: invalid choice"),
    "zero-epochs": (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    "unknown-preset": (["--preset", "huge"], "--preset: invalid choice"),
    "negative-seed": (["--seed", "-1"], "--seed must be in [0, 2**32 - 1], got -1"),
    "huge-seed": (["--seed", str(2**32)], "--seed must be in [0, 2**32 - 1]"),
    "zero-threads": (["--threads", "0"], "--threads must be >= 1 (or left out for all cores)"),
    "missing-data-dir": (["--data-dir", "{tmp}/nope"], "--data-dir '{tmp}/nope' is not a folder"),
    "out-under-a-file": (
        ["--out", "{tmp}/file/results"],
        "--out '{tmp}/file/results' cannot hold the results: {tmp}/file is not a folder",
    ),
}


@pytest.mark.parametrize(
    ("argv", "message"), [pytest.param(*case, id=name) for name, case in BAD_ARGUMENTS.items()]
)
def test_bad_arguments_exit_with_one_line_before_any_work(
    argv, message, tmp_path, capsys, no_training
):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        accuracy.main([arg.format(tmp=tmp_path) for arg in argv])
    assert exc.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line.startswith("python -m nnbench.accuracy: error: ")
    assert message.format(tmp=tmp_path) in last_line


def test_threads_above_the_cores_are_capped_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(accuracy, "cpu_count", lambda: 2)
    args = accuracy.parse_args(["--threads", "3", "--out", str(tmp_path)])
    assert args.threads == 2
    assert "warning: --threads 3 is more than the 2 cores" in capsys.readouterr().err
    assert accuracy.parse_args(["--threads", "2", "--out", str(tmp_path)]).threads == 2


def test_help_describes_every_option_with_its_default(capsys):
    parser = accuracy.build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and "default" in action.help, action.option_strings
    with pytest.raises(SystemExit) as exc:
        accuracy.parse_args(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    assert all(limit.name in text for limit in policy.LIMITS.values()) and "%%" not in text


RECORD = {"dataset": "cifar10", "kernel": "torch", "preset": "best", "smoke": True, "seed": 3}


def test_results_are_never_overwritten(tmp_path):
    first = accuracy.write_result(tmp_path, {**RECORD, "run": 1}, "20260101T000000Z")
    second = accuracy.write_result(tmp_path, {**RECORD, "run": 2}, "20260101T000000Z")
    third = accuracy.write_result(tmp_path, {**RECORD, "run": 3}, "20260101T000001Z")
    stem = "accuracy-cifar10-torch-best-smoke-seed3"
    assert [first.name, second.name, third.name] == [
        f"{stem}-20260101T000000Z.json",
        f"{stem}-20260101T000000Z-2.json",
        f"{stem}-20260101T000001Z.json",
    ]
    assert [json.loads(p.read_text())["run"] for p in (first, second, third)] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [first.name, second.name, third.name]
    )


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"dataset": "mnist", "kernel": "none", "preset": "mnist"}, "accuracy-mnist-none-smoke"),
        ({"preset": "fast", "smoke": False}, "accuracy-cifar10-torch"),
    ],
    ids=["mnist", "cifar10-fast"],
)
def test_result_names_give_the_configuration(changes, name, tmp_path):
    path = accuracy.write_result(tmp_path, {**RECORD, **changes}, "20260101T000000Z")
    assert path.name == f"{name}-seed3-20260101T000000Z.json"


RECIPES = {
    "mnist": (recipes.train_mnist_model, (784,)),
    "cifar10": (recipes.train_cifar10_model, (3, 32, 32)),
}


@pytest.mark.parametrize("task", list(RECIPES))
def test_recipes_take_float64_images_as_float32(task, rng):
    """The assignment's harness passes float64: cast once, it trains exactly as float32 does."""
    train, shape = RECIPES[task]
    x = rng.standard_normal((6, *shape))
    y = np.eye(10)[rng.integers(0, 10, 6)]
    models = []
    for images in (x, x.astype(np.float32)):
        np.random.seed(0)
        models.append(train(images, y, images[:3], y[:3], epochs=1, verbose=False))
    assert models[0].dtype == np.float32 and len(models[0].history) == 1
    assert models[0].history[0]["valid_loss"] == models[1].history[0]["valid_loss"]
    for key, value in models[1].parameters().items():
        np.testing.assert_array_equal(models[0].parameters()[key], value, err_msg=key)


@pytest.mark.parametrize("preset", sorted(recipes.CIFAR10_PRESETS))
def test_torch_twin_has_the_recipe_architecture(preset):
    engine = recipes.build_cifar10_model(kernel="torch", preset=preset)
    twin = torch_twin.build_twin(preset)
    engine_sizes = sorted(p.size for p in engine.parameters().values())
    twin_sizes = sorted(p.numel() for p in twin.parameters())
    assert engine_sizes == twin_sizes
    convs = [m for m in twin if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [
        layer.kernels.shape[0] for layer in engine.layers if isinstance(layer, Conv2D)
    ]


@pytest.mark.parametrize("preset", sorted(recipes.CIFAR10_PRESETS))
def test_a_preset_builds_its_convolutions_stage_by_stage(preset):
    recipe = recipes.cifar10_recipe(preset)
    model = recipes.build_cifar10_model(kernel="torch", preset=preset)
    widths = [layer.kernels.shape[0] for layer in model.layers if isinstance(layer, Conv2D)]
    expected = [c for c, n in zip(recipe.channels, recipe.convs_per_stage) for _ in range(n)]
    assert widths == expected


def test_a_recipe_needs_a_convolution_count_per_stage():
    with pytest.raises(ValueError, match=r"convs_per_stage must give one count per stage"):
        recipes.Recipe("x", 1, 8, 0.1, 0.9, 0.0, 0.2, channels=(8, 16), convs_per_stage=(1,))


def test_kernel_auto_is_accepted_and_all_means_the_real_backends(tmp_path):
    args = accuracy.parse_args(["--kernel", "auto", "--out", str(tmp_path)])
    assert args.kernels == ["auto"]
    assert accuracy.parse_args(["--out", str(tmp_path)]).kernels == kernels.available()


def test_the_overhead_ratio_is_a_ratio_of_medians_of_interleaved_steps():
    measured = accuracy.step_overhead("fast", rounds=2)
    assert measured["step_rounds"] == 2
    assert measured["step_engine_ms"] > 0 and measured["step_twin_ms"] > 0
    assert measured["ratio"] == measured["step_engine_ms"] / measured["step_twin_ms"]
