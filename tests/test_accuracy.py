"""The accuracy pipeline end to end on a small subset (``--smoke``), and its pure helpers."""

from __future__ import annotations

import json

import pytest
import torch

from nnbench import Conv2D, accuracy, recipes, torch_twin


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
            str(data_dir),
            "--out",
            str(tmp_path),
            "--quiet",
            "--threads",
            "1",
        ]
    )
    kernel = "none" if dataset == "mnist" else "im2col"
    path = tmp_path / f"accuracy-{dataset}-{kernel}-smoke-seed0.json"
    record = json.loads(path.read_text())
    assert code == 0, record["shortfalls"]
    assert record["schema"] == accuracy.SCHEMA
    assert record["smoke"] is True
    # well above chance (10%): the floors are what --smoke itself enforces
    assert record["final_test_accuracy"] > accuracy.SMOKE_FLOOR[dataset]
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
    ("kernel", "preset", "expected"),
    [
        ("loop", "fast", [(0.70, 3600.0)]),
        ("torch", "fast", [(0.70, 3600.0), (0.70, 180.0)]),
        ("im2col", "fast", [(0.70, 3600.0), (0.70, 300.0)]),
        ("torch", "best", [(0.70, 3600.0), (0.70, 180.0), (0.80, 900.0)]),
    ],
)
def test_cifar10_targets_follow_the_issue(kernel, preset, expected):
    got = [(t["accuracy"], t["seconds"]) for t in accuracy.targets_for("cifar10", kernel, preset)]
    assert got == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--kernel", "winograd"], "unknown backend 'winograd'"),
        (["--dataset", "imagenet"], "invalid choice"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--preset", "huge"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        accuracy.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


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
