"""``python -m nnbench.report``: rendered from result files the suite itself produces.

Benchmark records come from ``nnbench.bench.run_quick`` on tiny cases, written as a
pytest-benchmark JSON file; the accuracy record from ``python -m nnbench.accuracy --smoke``
on the shared MNIST copy (skipped with a reason when there is none). Checked: the numbers in
the tables are the inputs' numbers (GFLOP/s = flops / median, % of the SGEMM peak), the PNGs
are images, the stamp is there, partial inputs say what is missing and how to produce it, and
a bad input names the file and leaves the previous report untouched.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

import kernels
from nnbench import bench
from nnbench.machine import machine_info
from nnbench.report import ResultFileError, build, load, plots, render, tables, verify
from nnbench.report.__main__ import main
from tests.conftest import shared_data_dir
from tests.data_fixtures import dataset_root

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]

#: Tiny cases: a "recipe" layer and a two-point kernel-size sweep, milliseconds each.
TINY_CASES = [
    bench.Case("recipe", "tiny/conv1", (2, 3, 8, 8), (4, 3, 3, 3), 1),
    bench.Case("kernel_size", "k3/c4", (2, 4, 8, 8), (4, 4, 3, 3), 1),
    bench.Case("kernel_size", "k5/c4", (2, 4, 8, 8), (4, 4, 5, 5), 2),
]
#: Two verification shapes suffice to exercise the report; verify's own grid is tested below.
TINY_VERIFY = (verify.CASES[0], verify.CASES[1])
QUICK = {"cases": TINY_CASES[:1], "repeats": 2, "sgemm_n": 128}


def tiny_records() -> list[dict]:
    """The recipe case in all three passes (+ SGEMM), the sweep forward only: ~20 records."""
    records = bench.run_quick(**QUICK)
    sweep = bench.run_quick(cases=TINY_CASES[1:], repeats=2, sgemm_n=64, passes=("forward",))
    return records + [r for r in sweep if r["extra_info"]["pass"] != "sgemm"]


def _benchmark_file(path: Path, records: list[dict]) -> Path:
    payload = {
        # As tests/benchmarks/conftest.py records it: pytest-benchmark's own description,
        # with nnbench's machine_info() under "nnbench".
        "machine_info": {
            "cpu": {"brand_raw": "py-cpuinfo's name", "count": 99},
            "nnbench": machine_info(),
        },
        "commit_info": {"id": "0123456789abcdef", "dirty": True},
        "benchmarks": records,
        "datetime": "2026-11-27T00:00:00.000000",
        "version": "5.2.3",
    }
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def bench_file(workdir) -> Path:
    return _benchmark_file(workdir / "0001_tiny.json", tiny_records())


@pytest.fixture(scope="module")
def accuracy_dir(workdir) -> Path:
    data = shared_data_dir()
    if data is None:
        pytest.skip("no MNIST copy for `python -m nnbench.accuracy --smoke` (set NNBENCH_DATA)")
    dataset_root(data, "mnist")
    out = workdir / "results"
    env = {**os.environ, "NNBENCH_DATA": str(data)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnbench.accuracy",
            "--smoke",
            "--dataset",
            "mnist",
            "--quiet",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    files = list(out.glob("accuracy-*.json"))
    assert files, f"nnbench.accuracy wrote nothing:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def full_report(workdir, bench_file, accuracy_dir) -> Path:
    out = workdir / "out"
    build([bench_file, accuracy_dir], out, verify_cases=TINY_VERIFY)
    return out


def _table_rows(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the first markdown table whose first header cell is ``first_header``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_header:
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(
                    dict(zip(cells, (c.strip() for c in row.strip().strip("|").split("|"))))
                )
            return rows
    raise AssertionError(f"no table headed {first_header!r}")


# --- the full report ------------------------------------------------------------------------


def test_tables_carry_the_input_numbers(full_report, bench_file):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    records = json.loads(bench_file.read_text())["benchmarks"]
    sgemm = [r for r in records if r["extra_info"]["pass"] == "sgemm"]
    assert len(sgemm) == 1
    peak = sgemm[0]["extra_info"]["flops"] / sgemm[0]["stats"]["median"] / 1e9
    assert f"Measured SGEMM peak: {tables.sig(peak)} GFLOP/s" in text
    assert f"- Measured SGEMM peak: **{tables.sig(peak)} GFLOP/s**." in text  # at a glance

    rows = _table_rows(text, "case")  # the recipe suite's long table comes first
    recipe = [r for r in records if r["extra_info"]["suite"] == "recipe"]
    assert len(rows) == len(recipe) > 0
    for record in recipe:
        info = record["extra_info"]
        (row,) = [r for r in rows if (r["pass"], r["backend"]) == (info["pass"], info["backend"])]
        gflops = info["flops"] / record["stats"]["median"] / 1e9
        assert row["case"] == info["label"]
        assert row["GFLOP/s"] == tables.sig(gflops)
        assert row["median (ms)"] == tables.sig(record["stats"]["median"] * 1e3)
        assert row["% of SGEMM peak"] == f"{100 * gflops / peak:,.1f}"
        assert row["peak memory (MiB)"] == f"{info['peak_memory_bytes'] / 2**20:,.1f}"

    # ... and the DataFrame behind it holds the exact values.
    frame = tables.benchmark_frame([load.load_file(bench_file)])
    for record in recipe:
        info = record["extra_info"]
        match = frame[
            (frame["pass"] == info["pass"])
            & (frame["backend"] == info["backend"])
            & (frame["suite"] == "recipe")
        ]
        assert match["gflops"].item() == info["flops"] / record["stats"]["median"] / 1e9
        if "torch" in kernels.available():
            torch_median = next(
                r["stats"]["median"]
                for r in recipe
                if r["extra_info"]["backend"] == "torch" and r["extra_info"]["pass"] == info["pass"]
            )
            assert match["vs_torch"].item() == torch_median / record["stats"]["median"]


def test_stamp_names_machine_versions_and_runs(full_report, bench_file, accuracy_dir):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    info = machine_info()
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert f"{info['cpu_model']}, {info['cores']} cores" in text
    assert "**Threads**" in text and "torch: " in text
    for name, version in info["versions"].items():
        assert f"{name} {version}" in text
    runs = {r["id"]: r for r in _table_rows(text, "kind")}
    assert runs[bench_file.name]["date"] == "2026-11-27T00:00:00.000000"
    assert runs[bench_file.name]["commit"] == "0123456789 (dirty)"
    # nnbench's description wins over pytest-benchmark's own (py-cpuinfo) one.
    assert runs[bench_file.name]["CPU"] == info["cpu_model"]
    assert runs[bench_file.name]["cores"] == str(info["cores"])
    assert runs[bench_file.name]["threads"].startswith("BLAS: ")
    for path in accuracy_dir.glob("accuracy-*.json"):
        assert path.name in runs


def test_pngs_are_images(full_report):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    expected = {"throughput.png", "kernel_sweep.png", "verification.png", "accuracy_mnist.png"}
    assert expected <= set(linked)
    for name in linked:
        path = full_report / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[2] in (3, 4), name
        assert image.shape[0] >= 300 and image.shape[1] >= 500, (name, image.shape)


def test_accuracy_and_verification_sections(full_report, accuracy_dir):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    (path,) = accuracy_dir.glob("accuracy-mnist-*.json")
    result = json.loads(path.read_text())
    (row,) = [r for r in _table_rows(text, "kernel") if r.get("file") == path.name]
    assert row["test accuracy (%)"] == f"{100 * result['final_test_accuracy']:.2f}"
    assert row["smoke"] == "yes" and row["limit > 90% in ≤ 600 s"] == "n/a (smoke)"
    # Only a smoke run: the report says a full run is needed, and how.
    assert "python -m nnbench.accuracy --dataset mnist" in text
    assert "python -m nnbench.accuracy --dataset cifar10" in text

    checks = _table_rows(text, "backend")
    assert {(r["backend"], r["pass"]) for r in checks} == {
        (b, p) for b in kernels.available() for p in verify.PASSES
    }
    for r in checks:
        if kernels.get(r["backend"]).exact:
            assert r["float64 exact on integers"] == "yes", r


def test_missing_suites_are_named_with_the_command(full_report):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    missing = text.split("## What is missing", 1)[1].split("\n## ", 1)[0]
    assert "channel sweep" in missing and "tox -e bench" in missing
    assert "pytest --benchmark-only --benchmark-autosave" in missing


# --- partial inputs, and the quick default ---------------------------------------------------


def test_no_results_and_no_run_says_what_is_missing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--results", str(empty), "--out", str(tmp_path / "out"), "--no-run"]) == 0
    text = (tmp_path / "out" / "REPORT.md").read_text(encoding="utf-8")
    for needle in (
        "No benchmark results",
        "`tox -e bench`",
        "`pytest --benchmark-only --benchmark-autosave`",
        "No verification",
        "No accuracy results",
        "python -m nnbench.accuracy --dataset all --kernel all",
    ):
        assert needle in text
    assert "No benchmark results" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["REPORT.md"]


def test_fresh_clone_runs_the_quick_default_then_no_run_reuses_it(tmp_path, accuracy_dir):
    out = tmp_path / "out"
    # No saved benchmark run among the inputs: the quick embedded set is timed.
    result = build([accuracy_dir], out, run_quick_options=QUICK, verify_cases=TINY_VERIFY)
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "quick embedded set" in text and "tox -e bench" in text
    quick = load.load_file(out / "quick-benchmark.json")
    assert quick.quick
    assert {r["extra_info"]["label"] for r in quick.records} >= {TINY_CASES[0].label}
    assert (out / "verification.json").is_file()
    assert out / "REPORT.md" == result.written[-1]

    # --no-run renders from what the previous run left, computing nothing.
    before = (out / "quick-benchmark.json").read_bytes()
    build([accuracy_dir], out, no_run=True)
    again = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "quick-benchmark.json" in again and "read from" in again
    assert (out / "quick-benchmark.json").read_bytes() == before


# --- bad inputs -----------------------------------------------------------------------------


@pytest.fixture
def previous_report(tmp_path) -> Path:
    out = tmp_path / "reports"
    out.mkdir()
    (out / "REPORT.md").write_text("previous report\n", encoding="utf-8")
    return out


def _assert_untouched(out: Path) -> None:
    assert (out / "REPORT.md").read_text(encoding="utf-8") == "previous report\n"
    assert [p.name for p in out.iterdir()] == ["REPORT.md"]


def test_corrupted_json_names_the_file_and_keeps_the_report(
    bench_file, previous_report, tmp_path, capsys
):
    bad = tmp_path / "0002_truncated.json"
    bad.write_bytes(bench_file.read_bytes()[:500])
    code = main(["--results", str(bench_file), str(bad), "--out", str(previous_report)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err and "not valid JSON" in err
    _assert_untouched(previous_report)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"hello": "world"}, "not a result this report reads"),
        ([1, 2, 3], "not a result this report reads"),
        ({"schema": "someone.else/3"}, "unsupported schema 'someone.else/3'"),
        (
            {"benchmarks": [{"name": "test_x", "stats": {"median": 1.0, "min": 1.0}}]},
            "has no 'extra_info'",
        ),
    ],
    ids=["foreign-object", "foreign-list", "foreign-schema", "other-project-benchmark"],
)
def test_foreign_json_names_the_file(payload, message, previous_report, tmp_path, capsys):
    bad = tmp_path / "foreign.json"
    bad.write_text(json.dumps(payload), encoding="utf-8")
    with pytest.raises(ResultFileError) as info:
        build([bad], previous_report, no_run=True)
    assert str(info.value).startswith(f"{bad}: ") and message in str(info.value)
    assert main(["--results", str(bad), "--out", str(previous_report), "--no-run"]) == 2
    assert str(bad) in capsys.readouterr().err
    _assert_untouched(previous_report)


def test_command_line_exit_code_and_stderr(tmp_path, previous_report):
    bad = tmp_path / "accuracy-broken.json"
    bad.write_text('{"schema": "nnbench.accuracy/1", "dataset": ', encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnbench.report",
            "--results",
            str(bad),
            "--out",
            str(previous_report),
            "--no-run",
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"{bad}: not valid JSON" in done.stderr
    _assert_untouched(previous_report)


def test_missing_explicit_path_is_an_error(tmp_path, previous_report):
    with pytest.raises(ResultFileError, match="no such file or directory"):
        build([tmp_path / "nope.json"], previous_report, no_run=True)
    _assert_untouched(previous_report)


def accuracy_payload(**changes) -> dict:
    """The fields of an ``nnbench.accuracy`` result that the loader checks, all valid."""
    return {
        "schema": "nnbench.accuracy/1",
        "dataset": "mnist",
        "kernel": "none",
        "preset": "mnist",
        "seed": 0,
        "smoke": False,
        "machine": {"date": "2026-01-01T00:00:00+00:00"},
        "history": [{"epoch": 1, "elapsed_seconds": 10.0, "valid_accuracy": 0.95}],
        "time_to_accuracy": {"0.9": 10.0},
        "final_test_accuracy": 0.95,
        "torch_twin": None,
        **changes,
    }


def _epoch(accuracy: float) -> list[dict]:
    return [{"epoch": 1, "elapsed_seconds": 10.0, "valid_accuracy": accuracy}]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'; this report shows mnist, cifar10"),
        ({"final_test_accuracy": 7.5}, "'final_test_accuracy' is 7.5, but an accuracy is a"),
        ({"final_test_accuracy": -0.25}, "'final_test_accuracy' is -0.25, but an accuracy"),
        ({"history": _epoch(95.0)}, "'history[0].valid_accuracy' is 95.0, but an accuracy"),
        (
            {"torch_twin": {"seconds": 5.0, "final_test_accuracy": 75.0}},
            "'torch_twin.final_test_accuracy' is 75.0, but an accuracy",
        ),
        (
            {"torch_twin": {"seconds": 5.0, "history": _epoch(1.5)}},
            "'torch_twin.history[0].valid_accuracy' is 1.5, but an accuracy",
        ),
    ],
    ids=["unknown-dataset", "750-percent", "negative", "history-percent", "twin", "twin-history"],
)
def test_impossible_accuracy_results_are_refused_naming_the_file(
    changes, message, previous_report, tmp_path
):
    bad = tmp_path / "accuracy-bad.json"
    bad.write_text(json.dumps(accuracy_payload(**changes)), encoding="utf-8")
    with pytest.raises(ResultFileError) as info:
        build([bad], previous_report, no_run=True)
    assert str(info.value).startswith(f"{bad}: {message}")
    _assert_untouched(previous_report)


def test_the_newest_run_of_each_configuration_is_used(tmp_path):
    runs = {
        "old": accuracy_payload(machine={"date": "2026-01-01T00:00:00+00:00"}),
        "new": accuracy_payload(machine={"date": "2026-02-01T00:00:00+00:00"}),
        "other-seed": accuracy_payload(seed=1),
        "smoke": accuracy_payload(smoke=True),
        "cifar10": accuracy_payload(dataset="cifar10", kernel="torch", preset="fast"),
    }
    for name, payload in runs.items():
        (tmp_path / f"accuracy-{name}.json").write_text(json.dumps(payload), encoding="utf-8")
    inputs = load.collect([tmp_path])
    assert sorted(r.run_id for r in inputs.accuracy_runs) == [
        f"accuracy-{name}.json" for name in ("cifar10", "new", "other-seed", "smoke")
    ]
    old = tmp_path / "accuracy-old.json"
    assert f"{old}: not shown, accuracy-new.json is a newer run of the same configuration" in (
        inputs.notes
    )


def test_committed_results_are_read(monkeypatch):
    monkeypatch.chdir(REPO)
    inputs = load.collect([load.DEFAULT_RESULTS_DIR])
    assert {r.dataset for r in inputs.accuracy_runs} == {"mnist", "cifar10"}


def test_an_unwritable_out_is_a_usage_error_before_any_work(tmp_path, monkeypatch, capsys):
    def forbidden(**kwargs):
        raise AssertionError("the report started")

    monkeypatch.setattr("nnbench.report.__main__.build", forbidden)
    (tmp_path / "file").write_text("not a folder", encoding="utf-8")
    out = tmp_path / "file" / "reports"
    with pytest.raises(SystemExit) as info:
        main(["--out", str(out), "--no-run"])
    assert info.value.code == 2
    last_line = capsys.readouterr().err.splitlines()[-1]
    assert last_line == (
        f"python -m nnbench.report: error: --out '{out}' cannot hold the report: "
        f"{tmp_path / 'file'} is not a folder"
    )


# --- the derived numbers --------------------------------------------------------------------


def _record(backend, pass_, suite, label, kernel, median, flops=1e9, input_shape=None, **extra):
    """A benchmark entry shaped like tests/benchmarks' (for what the tiny run cannot make)."""
    return {
        "name": f"test[{backend}-{pass_}-{label}]",
        "fullname": f"tests/benchmarks/x.py::test[{backend}-{pass_}-{label}]",
        "stats": {"median": median, "min": median, "rounds": 3},
        "extra_info": {
            "backend": backend,
            "pass": pass_,
            "suite": suite,
            "label": label,
            "input_shape": input_shape or [8, 32, 32, 32],
            "kernel_shape": kernel,
            "padding": 0,
            "dtype": "float32",
            "flops": flops,
            **extra,
        },
    }


def test_fft_crossover_is_where_it_stays_faster_per_width():
    sizes = (3, 5, 7, 9)
    # Narrow: fft beats im2col at 5, loses at 7, wins again at 9 -> crossover 9; torch always
    # wins. Wide (8x input channels): fft wins from 5 on, and beats everyone from 7 on.
    narrow = {"fft": (2.0, 0.9, 1.1, 1.0), "im2col": (1.0, 1.0, 1.0, 2.0), "torch": (0.5,) * 4}
    wide = {
        "fft": (2.0, 0.9, 0.8, 0.7),
        "im2col": (1.0, 1.0, 1.0, 2.0),
        "torch": (0.5, 0.5, 0.9, 1.0),
    }
    records = [
        _record(
            name,
            "forward",
            "kernel_size",
            f"k{k}/c{c}",
            [c, c, k, k],
            t,
            input_shape=[8, c, 32, 32],
        )
        for c, series in ((32, narrow), (256, wide))
        for name, times in series.items()
        for k, t in zip(sizes, times)
    ]
    run = load.benchmark_run({"benchmarks": records}, run_id="synthetic")
    frame = tables.benchmark_frame([run])
    found = {c.series: c for c in tables.crossovers(frame)}
    assert set(found) == {"8x32x32x32 → 32", "8x256x32x32 → 256"}
    assert found["8x32x32x32 → 32"].kernel_sizes == sizes
    assert found["8x32x32x32 → 32"].versus_im2col == 9
    assert found["8x32x32x32 → 32"].versus_all is None
    assert found["8x256x32x32 → 256"].versus_im2col == 5
    assert found["8x256x32x32 → 256"].versus_all == 7
    png = plots.kernel_sweep(frame, list(found.values()))
    assert png[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("suite", "series"), [("kernel_size", ["8x32x32x32 → 16"]), ("channels", [])], ids=str
)
def test_sweep_rows_name_each_series(suite, series):
    """Also with no rows: pandas 3 with pyarrow once refused the empty case (``tox -e pandas30``)."""
    records = [_record("torch", "forward", "kernel_size", "k3/c16", [16, 32, 3, 3], 1.0)]
    frame = tables.benchmark_frame([load.benchmark_run({"benchmarks": records}, run_id="x")])
    rows = tables.sweep_rows(frame, suite)
    assert rows["series"].tolist() == series
    assert rows["k"].tolist() == ([3] if series else [])


def test_a_folder_gives_its_newest_run(tmp_path):
    older = _benchmark_file(
        tmp_path / "0001_a.json", [_record("torch", "forward", "recipe", "x", [1, 1, 3, 3], 1.0)]
    )
    newer = _benchmark_file(
        tmp_path / "0002_b.json", [_record("torch", "forward", "recipe", "x", [1, 1, 3, 3], 2.0)]
    )
    os.utime(older, (1_000_000, 1_000_000))
    inputs = load.collect([tmp_path])
    assert [r.path for r in inputs.benchmark_runs] == [newer]
    assert any("1 older JSON file" in note for note in inputs.notes)


def test_quick_and_no_run_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--quick", "--no-run"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_step_and_layer_records_render(tmp_path, bench_file):
    """Records only the full suite makes (layer, step) render in their own tables."""
    extra = [
        _record("torch", "layer", "recipe", "tiny/conv1", [4, 3, 3, 3], 0.002, flops=3e6),
        _record("torch", "step", "step", "cifar10-fast", None, 0.5, flops=2e9),
        _record("numpy", "step", "step", "mnist", None, 0.05, flops=None),
    ]
    extra_file = _benchmark_file(tmp_path / "0002_extra.json", extra)
    build([bench_file, extra_file], tmp_path / "out", no_run=True)
    text = (tmp_path / "out" / "REPORT.md").read_text(encoding="utf-8")
    steps = _table_rows(text.split("### Training steps", 1)[1], "case")
    assert {r["case"]: r["torch"] for r in steps}["cifar10-fast"] == "500"
    assert {r["case"]: r["numpy"] for r in steps}["mnist"] == "50.0"


def test_targets_use_the_fastest_full_run(accuracy_dir):
    (path,) = accuracy_dir.glob("accuracy-mnist-*.json")
    smoke = load.load_file(path)
    full = copy.deepcopy(smoke.data)
    full["smoke"] = False
    full["history"] = [
        {"epoch": 1, "elapsed_seconds": 20.0, "valid_accuracy": 0.97},
        {"epoch": 2, "elapsed_seconds": 40.0, "valid_accuracy": 0.981},
    ]
    full["time_to_accuracy"] = {"0.9": 20.0, "0.98": 40.0}
    slow = copy.deepcopy(full)
    slow["time_to_accuracy"] = {"0.9": 50.0, "0.98": 70.0}
    runs = [
        smoke,
        load.AccuracyRun("full.json", path, full),
        load.AccuracyRun("slow.json", path, slow),
    ]
    table = tables.target_table(runs, tables.project_targets([]))
    row = table[table["target"].str.startswith("MNIST")].iloc[0]
    assert row["best run"] == "full.json" and row["time to threshold (s)"] == 40.0
    assert row["verdict"] == "met" and row["runs"] == 2
    cifar = table[table["target"].str.startswith("CIFAR-10")]
    assert (cifar["verdict"] == "no full run").all()


def test_verification_grid_covers_every_backend_pass_and_dtype():
    result = verify.run(cases=TINY_VERIFY)
    keys = {(c.backend, c.pass_, c.dtype) for c in result.checks}
    assert keys == {
        (b, p, d) for b in kernels.available() for p in verify.PASSES for d in verify.DTYPES
    }
    for check in result.checks:
        assert not check.errors, check.errors
        assert check.cases == len(TINY_VERIFY)
        limit = 1e-5 if check.dtype == "float32" else 1e-12
        assert check.max_rel_error < limit, check
        if check.exact_required:
            assert check.exact, check
    # The names the brief asks for are all in the fixed grid.
    names = " ".join(c.name for c in verify.CASES)
    for needle in (
        "batch1",
        "nonsquare-k4x5",
        "p0",
        "full-k3p2",
        "overpad",
        "c3to8-k3",
        "c3to8-k5",
        "weightgrad",
    ):
        assert needle in names


def test_a_wrong_backend_in_the_quick_run_stops_the_report(monkeypatch, previous_report, capsys):
    def wrong(**_):
        raise AssertionError("im2col forward k3p1[2,3,8,8]->4: max abs error 3 exceeds 1e-05")

    monkeypatch.setattr(bench, "run_quick", wrong)
    empty = previous_report.parent / "empty"
    empty.mkdir()
    assert main(["--results", str(empty), "--out", str(previous_report)]) == 2
    err = capsys.readouterr().err
    assert "quick benchmark run failed" in err and "im2col forward" in err
    _assert_untouched(previous_report)


def test_quick_default_keeps_the_recipe_and_a_sweep_up_to_k7():
    from nnbench.report import QUICK_MAX_KERNEL, quick_cases

    cases = quick_cases()
    assert {c.label for c in bench.recipe_cases()} <= {c.label for c in cases}
    sweep = sorted({c.kernel_shape[2] for c in cases if c.suite == "kernel_size"})
    assert len(sweep) >= 2 and sweep[-1] == QUICK_MAX_KERNEL


def test_stamp_shows_the_settings_and_a_late_import():
    machine = {
        "environment": {"OPENBLAS_THREAD_TIMEOUT": "16", "OMP_NUM_THREADS": None},
        "thread_settings_missed_by": ["numpy"],
    }
    text = render._settings_text(machine)
    assert "`OPENBLAS_THREAD_TIMEOUT=16`" in text and "OMP_NUM_THREADS" not in text
    assert "running without them: numpy" in text
    assert render._settings_text({}) == "none recorded"
