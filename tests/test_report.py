"""``python -m nnbench.report``: rendered from result files shaped like the suite's.

Benchmark records are built here, small and synthetic, in the suite's record schema (stats with
quartiles, ``extra_info`` with verdict, breakdown, GEMM bound, auto's choice, the overhead
ratio), so every derived number can be checked against its inputs; one small end-to-end quick
run goes through the real suite (``nnbench.bench.run_suite``). The accuracy record comes from
``python -m nnbench.accuracy --smoke`` on the shared MNIST copy (skipped with a reason when
there is none). Checked: the numbers in the tables are the inputs' numbers, every target of
``nnbench.policy`` gets a verdict per machine and thread count, a wrong backend fails (exit 1,
the report written in full), the figures show what was measured (spread, bracketed crossovers,
reference lines inside their axes, one colour per backend, plain log ticks, legends outside the
axes), partial inputs say what is missing, and a bad input names the file and leaves the
previous report untouched.
"""

from __future__ import annotations

import copy
import functools
import gc
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from matplotlib.container import BarContainer

import kernels
from kernels import _registry, backend_im2col
from nnbench import bench, policy
from nnbench.machine import machine_info
from nnbench.report import (
    ResultFileError,
    build,
    load,
    metrics,
    plots,
    provenance,
    render,
    tables,
    verify,
)
from nnbench.report.__main__ import ProgressBar, main
from nnbench.verify import CHECK_CASES
from tests.conftest import shared_data_dir
from tests.data_fixtures import dataset_root

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
#: Two verification shapes suffice to exercise the report; the full grid is checked once.
SMALL_VERIFY = CHECK_CASES[:2]
LAYERS = {  # label -> (input shape, kernel shape), a small stand-in for the recipe
    "fast/conv1": ([8, 3, 16, 16], [4, 3, 3, 3]),
    "fast/conv2": ([8, 4, 8, 8], [8, 4, 3, 3]),
    "fast/conv3": ([8, 8, 4, 4], [16, 8, 3, 3]),
}
PASSES = ("forward", "grad_inputs", "grad_kernels")


# --- synthetic records -----------------------------------------------------------------------


def _record(
    backend,
    pass_,
    suite,
    label,
    median,
    *,
    kernel=None,
    input_shape=None,
    flops=1e9,
    threads=2,
    spread=0.05,
    passed=True,
    **extra,
) -> dict:
    """A benchmark entry shaped like tests/benchmarks' (quartiles ``spread`` around the
    median)."""
    name = f"test[{suite}-{backend}-{pass_}-{label}-t{threads}]"
    verdict = {
        "name": f"{backend} {pass_} {label}",
        "passed": passed,
        "max_abs_error": 1e-7 if passed else 3e-3,
        "max_rel_error": 1e-8 if passed else 1e-3,
        "bound": 1e-5,
        "exact": False,
        "worst": None if passed else [0, 1, 2, 3],
        "actual": None,
        "expected": None,
        "problem": None,
    }
    return {
        "name": name,
        "fullname": f"tests/benchmarks/x.py::{name}",
        "stats": {
            "median": median,
            "min": median * 0.9,
            "q1": median * (1 - spread / 2),
            "q3": median * (1 + spread / 2),
            "rounds": 5,
        },
        "extra_info": {
            "backend": backend,
            "pass": pass_,
            "suite": suite,
            "label": label,
            "case_id": f"{label}-id",
            "input_shape": input_shape,
            "kernel_shape": kernel,
            "padding": 1,
            "dtype": "float32",
            "flops": flops,
            "threads": threads,
            "peak_memory_bytes": 2**20,
            "memory_method": "rss-hwm",
            "max_abs_error": verdict["max_abs_error"],
            "verdict": verdict,
            **extra,
        },
    }


#: Median seconds of each backend on every recipe pass (torch fastest, as usual).
RECIPE_SPEED = {"torch": 1e-3, "im2col": 2e-3, "loop": 4e-3, "fft": 8e-3, "winograd": 3e-3}


def recipe_records(threads=2, scale=1.0, **changes) -> list[dict]:
    """Every backend x pass x layer, with GEMM bound and breakdown for the numpy backends, and
    auto (running torch)."""
    records = []
    for label, (x, k) in LAYERS.items():
        for pass_ in PASSES:
            for backend, median in RECIPE_SPEED.items():
                more = {}
                if backend != "torch":
                    more = {
                        "gemm_bound_s": median * scale / 2,
                        "breakdown_s": {"layout": 0.3, "gemm": 0.5, "reduction": 0.2},
                        "gemm_calls": 1,
                    }
                records.append(
                    _record(
                        backend,
                        pass_,
                        "recipe",
                        label,
                        median * scale,
                        kernel=k,
                        input_shape=x,
                        threads=threads,
                        **more,
                    )
                )
            records.append(
                _record(
                    "auto",
                    pass_,
                    "recipe",
                    label,
                    1.1e-3 * scale,
                    kernel=k,
                    input_shape=x,
                    threads=threads,
                    auto_choice="torch",
                )
            )
    for record in records:
        for key, value in changes.items():
            record["extra_info"][key] = value
    return records


def sgemm_record(threads=2, median=0.05) -> dict:
    return _record(
        "numpy",
        "sgemm",
        "sgemm",
        "2048^3",
        median,
        kernel=[2048, 2048],
        input_shape=[2048, 2048],
        flops=2 * 2048**3,
        threads=threads,
    )


def overhead_record(threads=2, engine=0.012, twin=0.010) -> dict:
    return _record(
        "torch",
        "overhead",
        "overhead",
        "cifar10-fast",
        engine,
        threads=threads,
        input_shape=[128, 3, 32, 32],
        twin_median_s=twin,
        ratio=engine / twin,
    )


def sweep_records(sizes=(3, 7), fft=(9.0, 5.0), im2col=(4.0, 20.0), threads=2) -> list[dict]:
    """A kernel-size sweep: fft and im2col medians (ms) at each k."""
    records = []
    for k, f, i in zip(sizes, fft, im2col):
        for backend, ms in (("fft", f), ("im2col", i)):
            records.append(
                _record(
                    backend,
                    "forward",
                    "kernel_size",
                    f"k{k}/c32",
                    ms / 1e3,
                    kernel=[32, 32, k, k],
                    input_shape=[32, 32, 32, 32],
                    threads=threads,
                )
            )
    return records


def scaling_records(ladder=(1, 2, 4)) -> list[dict]:
    """im2col doubles its speed per doubling of threads up to 2 then stays; the GEMM doubles
    every time."""
    records = []
    for label, (x, k) in list(LAYERS.items())[:2]:
        for t in ladder:
            records.append(
                _record(
                    "gemm",
                    "forward",
                    "scaling",
                    label,
                    8e-3 / t,
                    kernel=k,
                    input_shape=x,
                    threads=t,
                )
            )
            for pass_ in PASSES:
                records.append(
                    _record(
                        "im2col",
                        pass_,
                        "scaling",
                        label,
                        8e-3 / min(t, 2),
                        kernel=k,
                        input_shape=x,
                        threads=t,
                    )
                )
    return records


def oversubscribed_records(cores, ratio=1.0, backends=("im2col",)) -> list[dict]:
    """The oversubscribed test at twice ``cores``: each call at the cores takes im2col's top
    time of ``scaling_records``, oversubscribed ``ratio`` times that (``ratio``: a number, or
    {pass: number}, 1 for the passes it leaves out)."""
    records = []
    for label, (x, k) in list(LAYERS.items())[:2]:
        for backend in backends:
            for pass_ in PASSES:
                at_cores = 8e-3 / min(cores, 2)
                factor = ratio.get(pass_, 1.0) if isinstance(ratio, dict) else ratio
                records.append(
                    _record(
                        backend,
                        pass_,
                        "oversubscribed",
                        label,
                        at_cores * factor,
                        kernel=k,
                        input_shape=x,
                        threads=2 * cores,
                        beside_median_s={"cores": at_cores},
                        cores_threads=cores,
                    )
                )
    return records


def machine(
    cpu="Small Xeon", cores=2, threads=2, arch="Haswell", commit=None, dirty=False, note=None
) -> dict:
    """nnbench's machine_info(), with the parts a column is made of replaced."""
    info = machine_info()
    info.update(
        cpu_model=cpu,
        cores=cores,
        threads={
            "blas": [
                {
                    "library": "openblas",
                    "version": "0.3.30",
                    "threads": threads,
                    "architecture": arch,
                }
            ],
            "torch_threads": threads,
        },
        source={"commit": commit or provenance.head(), "dirty": dirty}
        | ({"note": note} if note else {}),
    )
    return info


def write_run(path: Path, records: list[dict], nnbench: dict | None = None, **payload) -> Path:
    """A pytest-benchmark JSON file as tests/benchmarks/conftest.py records it: pytest-benchmark's
    own description, with nnbench's machine_info() under "nnbench"."""
    data = {
        "machine_info": {
            "cpu": {"brand_raw": "py-cpuinfo's name", "count": 99},
            "nnbench": nnbench or machine(),
        },
        "commit_info": {"id": provenance.head() or "0123456789abcdef", "dirty": False},
        "benchmarks": records,
        "datetime": "2026-11-27T00:00:00.000000",
        "version": "5.2.3",
        **payload,
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def frame_of(*files: Path):
    return tables.benchmark_frame([load.load_file(f) for f in files])


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


def _section(text: str, title: str) -> str:
    return text.split(f"{title}\n", 1)[1].split("\n## ", 1)[0]


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def bench_file(workdir) -> Path:
    records = (
        recipe_records()
        + [sgemm_record(), overhead_record()]
        + sweep_records(sizes=(1, 3, 5), fft=(9.0, 8.0, 7.0), im2col=(1.0, 6.0, 15.0))
        + scaling_records()
        + [_record("torch", "step", "step", "cifar10-fast", 0.5, flops=2e9)]
    )
    return write_run(workdir / "0001_synthetic.json", records)


@pytest.fixture(scope="module")
def accuracy_dir(workdir) -> Path:
    data = shared_data_dir()
    if data is None:
        pytest.skip("no MNIST copy for `python -m nnbench.accuracy --smoke` (set NNBENCH_DATA)")
    dataset_root(data, "mnist")
    out = workdir / "results"
    env = {**os.environ, "NNBENCH_DATA": str(data)}
    command = [
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
    ]
    done = subprocess.run(
        command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    files = list(out.glob("accuracy-*.json"))
    assert files, f"nnbench.accuracy wrote nothing:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def full_report(workdir, bench_file, accuracy_dir) -> Path:
    out = workdir / "out"
    result = build([bench_file, accuracy_dir], out, verify_cases=SMALL_VERIFY)
    assert not result.failures, result.failures
    return out


@pytest.fixture
def offby(monkeypatch):
    """A planted wrong backend: im2col's result 0.1% too large, registered as ``offby``."""

    def convolve(inputs, kernels_, padding):
        return backend_im2col.convolve(inputs, kernels_, padding) * inputs.dtype.type(1.001)

    module = SimpleNamespace(convolve=convolve)
    monkeypatch.setitem(kernels._BACKENDS, "offby", _registry.load(module, "offby"))
    return "offby"


# --- the full report ------------------------------------------------------------------------


def test_tables_carry_the_input_numbers(full_report, bench_file):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    records = json.loads(bench_file.read_text())["benchmarks"]
    (sgemm,) = [r for r in records if r["extra_info"]["pass"] == "sgemm"]
    peak = sgemm["extra_info"]["flops"] / sgemm["stats"]["median"] / 1e9
    assert f"{tables.sig(peak)} GFLOP/s" in _section(text, "## At a glance")

    frame = frame_of(bench_file)
    column = "Small Xeon 2c · 2 thr"
    assert column in tables.column_order(frame)  # with the scaling group's 1 and 4 threads
    rows = _table_rows(_section(text, "### Conv layers of the CIFAR-10 recipe"), "case")
    recipe = [r for r in records if r["extra_info"]["suite"] == "recipe"]
    assert len(rows) == len(recipe) > 0
    for record in recipe:
        info = record["extra_info"]
        (row,) = [
            r
            for r in rows
            if (r["case"], r["pass"], r["backend"].split()[0])
            == (info["label"], info["pass"], info["backend"])
        ]
        torch = RECIPE_SPEED["torch"]
        expected = tables.sig(record["stats"]["median"] * 1e3)
        if info["backend"] != "torch":
            expected += f" · {torch / record['stats']['median']:.2f}×"
        assert row[column] == expected
        # ... and the DataFrame behind it holds the exact values.
        match = frame[
            (frame["label"] == info["label"])
            & (frame["pass"] == info["pass"])
            & (frame["backend"] == info["backend"])
            & (frame["suite"] == "recipe")
        ]
        gflops = info["flops"] / record["stats"]["median"] / 1e9
        assert match["gflops"].item() == gflops
        assert match["pct_peak"].item() == pytest.approx(100 * gflops / peak)
        assert match["vs_torch"].item() == pytest.approx(torch / record["stats"]["median"])


def test_stamp_names_machine_versions_and_runs(full_report, bench_file, accuracy_dir):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    info = machine_info()
    assert re.search(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert f"{info['cpu_model']}, {info['cores']} cores" in text
    assert "**Threads**" in text and "torch: " in text
    for name, version in info["versions"].items():
        assert f"{name} {version}" in text
    runs = {r["file"]: r for r in _table_rows(text, "kind")}
    assert runs[bench_file.name]["date"] == "2026-11-27T00:00:00"
    # nnbench's description wins over pytest-benchmark's own (py-cpuinfo) one.
    assert runs[bench_file.name]["machine"] == "Small Xeon, 2 cores"
    assert runs[bench_file.name]["BLAS kernels"] == "OpenBLAS 0.3.30 (Haswell kernels)"
    assert runs[bench_file.name]["shown as"].startswith("Small Xeon 2c · ")
    for path in accuracy_dir.glob("accuracy-*.json"):
        assert path.name in runs


def test_pngs_are_images(full_report):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    expected = {
        "throughput.png",
        "kernel_sweep.png",
        "scaling.png",
        "verification.png",
        "accuracy_mnist.png",
    }
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
    assert row["smoke"] == "yes" and row[f"limit: {policy.LIMITS['mnist'].name}"] == "n/a (smoke)"
    # Only a smoke run: the report says a full run is needed, and how.
    assert "python -m nnbench.accuracy --dataset mnist" in text
    assert "python -m nnbench.accuracy --dataset cifar10" in text

    checks = _table_rows(_section(text, "## Verification"), "backend")
    assert {(r["backend"].split()[0], r["pass"], r["dtype"]) for r in checks} == {
        (b, p, d) for b in kernels.available() for p in PASSES for d in ("float32", "float64")
    }
    for r in checks:
        assert r["verdict"] == "PASS", r
        exact = kernels.get(r["backend"].split()[0]).exact
        assert r["exact on integers"] == ("yes" if exact else "not required"), r


def test_missing_suites_are_named_with_the_command(full_report):
    text = (full_report / "REPORT.md").read_text(encoding="utf-8")
    missing = _section(text, "## What is missing")
    assert "channel sweep" in missing and "tox -e bench" in missing
    assert "pytest --benchmark-only --benchmark-autosave" in missing


# --- verification: verdicts that can fail ---------------------------------------------------


def test_verification_matrix_covers_every_backend_pass_dtype_and_case():
    payload = verify.run()  # the full grid of the unit tests: it must pass here too
    keys = {(c["backend"], c["pass"], c["dtype"]) for c in payload["checks"]}
    assert keys == {
        (b, p, d) for b in kernels.available() for p in PASSES for d in ("float32", "float64")
    }
    assert [c["case_id"] for c in payload["cases"]] == [c.id for c in CHECK_CASES]
    for check in payload["checks"]:
        assert check["passed"], check["failures"][:1]
        declined = len(check["skipped"])
        assert check["checked"] == 2 * (len(CHECK_CASES) - declined)  # normal and integer
        assert check["closest"]["max_abs_error"] <= check["closest"]["bound"] or (
            check["closest"]["bound"] == 0 and check["closest"]["max_abs_error"] == 0
        )
        if check["exact_required"]:
            assert check["exact_equal"] is True, check
    assert json.loads(json.dumps(payload)) == payload  # JSON-ready as it is


def test_a_planted_wrong_backend_fails_the_matrix_and_the_report_exits_1(
    offby, bench_file, tmp_path, monkeypatch, capsys
):
    payload = verify.run(backends=["im2col", offby], cases=SMALL_VERIFY)
    by_backend = {(c["backend"], c["pass"], c["dtype"]): c for c in payload["checks"]}
    assert all(c["passed"] for k, c in by_backend.items() if k[0] == "im2col")
    failed = [c for k, c in by_backend.items() if k[0] == offby]
    assert failed and not any(c["passed"] for c in failed)
    first = failed[0]["failures"][0]
    assert first["max_abs_error"] > first["bound"] > 0  # the error and the bound it broke
    assert first["case"] == SMALL_VERIFY[0].with_dtype(failed[0]["dtype"]).id

    # Through the command line: the report is written in full and exits 1.
    monkeypatch.setattr(
        "nnbench.report.__main__.build", functools.partial(build, verify_cases=SMALL_VERIFY)
    )
    out = tmp_path / "out"
    assert main(["--results", str(bench_file), "--out", str(out)]) == 1
    assert "offby" in capsys.readouterr().err
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    glance = _section(text, "## At a glance")
    assert "**FAILED**: `offby`" in glance and "verification forward float32" in glance
    rows = _table_rows(_section(text, "## Verification"), "backend")
    wrong = [r for r in rows if r["backend"].startswith("offby")]
    assert wrong and all(r["verdict"] == "FAIL" and "FAILED" in r["backend"] for r in wrong)
    assert all("max abs error" in r["worst case"] and "bound" in r["worst case"] for r in wrong)
    assert {"throughput.png", "verification.png", "kernel_sweep.png"} <= {
        p.name for p in out.iterdir()
    }


def test_a_failed_benchmark_verdict_marks_the_backend_failed_everywhere(tmp_path, capsys):
    records = recipe_records() + [sgemm_record()]
    for record in records:
        if record["extra_info"]["backend"] == "loop" and record["extra_info"]["pass"] == "forward":
            record["extra_info"]["verdict"]["passed"] = False
            record["extra_info"]["verdict"]["max_abs_error"] = 3e-3
    run = write_run(tmp_path / "run.json", records)
    out = tmp_path / "out"
    assert main(["--results", str(run), "--out", str(out), "--no-run"]) == 1
    assert "loop: benchmark fast/conv1 forward" in capsys.readouterr().err
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "**FAILED**: `loop`" in _section(text, "## At a glance")
    recipe = _table_rows(_section(text, "### Conv layers of the CIFAR-10 recipe"), "case")
    loop_rows = [r for r in recipe if r["backend"].startswith("loop")]
    assert loop_rows and all(r["backend"] == "loop FAILED" for r in loop_rows)
    assert all(
        r["Small Xeon 2c · 2 thr"].endswith("FAILED") for r in loop_rows if r["pass"] == "forward"
    )
    fastest = _table_rows(_section(text, "## At a glance"), "layer")
    assert not any(
        "loop" in r["Small Xeon 2c · 2 thr"] for r in fastest
    )  # a wrong result is not fast


# --- one timing protocol: the quick set through the suite --------------------------------------


def test_the_quick_set_runs_through_the_suite_and_no_run_reuses_it(tmp_path, accuracy_dir):
    out = tmp_path / "out"
    seen = []
    # A tiny real subset of `-m quick`: torch's forward and input gradient on one recipe layer.
    result = build(
        [accuracy_dir],
        out,
        verify_cases=SMALL_VERIFY,
        bench_progress=lambda done, total, test_id: seen.append((done, total)),
        quick_options={"keyword": "torch and conv1 and (forward or grad_inputs)"},
    )
    assert not result.failures
    total = seen[-1][1]
    assert seen == [(i, total) for i in range(1, total + 1)] and total >= 2
    kept = json.loads((out / "quick-benchmark.json").read_text())
    quick = kept["nnbench_quick"]
    assert quick["marker"] == "quick" and quick["pytest_exit_code"] == 0
    assert quick["tests"] == total == len(kept["benchmarks"])
    assert all("verdict" in r["extra_info"] for r in kept["benchmarks"])
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    note = f"{total} benchmarks in {quick['seconds']:.0f} s"  # the duration measured, no other
    assert note in _section(text, "## What is missing")
    assert "two minutes" not in text
    assert (out / "verification.json").is_file()
    assert out / "REPORT.md" == result.written[-1]
    # No handle to the suite's JSON is left open (pytest-benchmark < 5 leaves some: closed).
    handles = [o for o in gc.get_objects() if type(o) is io.BufferedWriter and not o.closed]
    assert not [h for h in handles if str(h.name).endswith("quick.json")]

    # --no-run renders from what the previous run left, computing nothing.
    before = (out / "quick-benchmark.json").read_bytes()
    build([accuracy_dir], out, no_run=True)
    again = (out / "REPORT.md").read_text(encoding="utf-8")
    assert note in again and "read from" in again
    assert (out / "quick-benchmark.json").read_bytes() == before


def test_a_failed_verdict_in_the_quick_run_still_renders_and_exits_1(tmp_path, monkeypatch, capsys):
    records = recipe_records() + [sgemm_record()]
    records[0]["extra_info"]["verdict"]["passed"] = False
    wrong = records[0]["extra_info"]["backend"]

    def fake_suite(json_path, *, marker, keyword, threads, budget, progress):
        assert marker == "quick"
        for i in range(len(records)):
            progress(i + 1, len(records), f"test_{i}")
        write_run(Path(json_path), records)
        return 1  # pytest's code when a benchmark's check failed

    monkeypatch.setattr(bench, "run_suite", fake_suite)
    monkeypatch.setattr(
        "nnbench.report.__main__.build", functools.partial(build, verify_cases=SMALL_VERIFY)
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert main(["--results", str(empty), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{len(records)}/{len(records)}" in captured.err  # the progress bar's count
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert f"**FAILED**: `{wrong}`" in text
    assert "## Verification" in text and "## Accuracy" in text  # written in full


def test_a_quick_run_that_left_no_results_is_unusable_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "run_suite", lambda *a, **k: 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    previous = tmp_path / "reports"
    previous.mkdir()
    (previous / "REPORT.md").write_text("previous report\n", encoding="utf-8")
    assert main(["--results", str(empty), "--out", str(previous)]) == 2
    assert "wrote no results (pytest exit code 4)" in capsys.readouterr().err
    assert (previous / "REPORT.md").read_text(encoding="utf-8") == "previous report\n"


def test_progress_bar_shows_count_and_time_left(capfd):
    bar = ProgressBar()
    for done in range(1, 5):
        bar(done, 4, f"test_{done}")
    bar.close()
    err = capfd.readouterr().err
    assert "4/4" in err and "test_4" in err
    assert re.search(r"<\d\d:\d\d", err)  # tqdm's estimate of the time left


# --- targets, per machine and thread count -----------------------------------------------------


@pytest.fixture(scope="module")
def two_machines(workdir) -> tuple[Path, Path]:
    """A 2-core run (recipe, sweep, overhead, auto) and a 16-core one (recipe 4x faster,
    scaling group), side by side."""
    small = write_run(
        workdir / "small.json",
        recipe_records() + [sgemm_record(), overhead_record(engine=0.012, twin=0.010)],
    )
    big = write_run(
        workdir / "big.json",
        recipe_records(threads=16, scale=0.25)
        + scaling_records(ladder=(1, 2, 4, 8, 16))
        + oversubscribed_records(cores=16)
        + [sgemm_record(threads=16, median=0.01)],
        nnbench=machine(cpu="Big Xeon", cores=16, threads=16, arch="SkylakeX"),
    )
    return small, big


def test_every_speed_target_is_judged_in_each_column(two_machines):
    frame = frame_of(*two_machines)
    assert metrics.target_columns(frame) == ["Small Xeon 2c · 2 thr", "Big Xeon 16c · 16 thr"]
    judged = {(j.target.key, j.column): j for j in metrics.judge_all(frame)}
    assert {key for key, _ in judged} == {t.key for t in policy.SPEED_TARGETS}
    small, big = "Small Xeon 2c · 2 thr", "Big Xeon 16c · 16 thr"
    torch, im2col = RECIPE_SPEED["torch"], RECIPE_SPEED["im2col"]
    # ratio_to_torch: every recipe pass has the same ratio here, so the geometric mean is it.
    assert judged[("im2col_vs_torch", small)].measured.value == pytest.approx(torch / im2col)
    assert judged[("im2col_vs_torch", small)].verdict == "met"  # 0.5 >= 0.5
    assert judged[("loop_vs_torch", big)].measured.value == pytest.approx(0.25)
    assert judged[("loop_vs_torch", big)].verdict == "MISSED"
    # distance_to_bound: the synthetic GEMMs take half the median.
    assert judged[("im2col_bound", small)].measured.value == pytest.approx(2.0)
    assert judged[("im2col_bound", small)].verdict == "MISSED"
    # scaling_vs_gemm: im2col gains 2x from 1 to 16 threads, the GEMM 16x.
    assert judged[("im2col_scaling", big)].measured.value == pytest.approx(2 / 16)
    assert judged[("im2col_scaling", small)].verdict == "not measured"
    assert judged[("loop_scaling", big)].verdict == "not measured"  # no loop in the group
    # slowdown_with_threads: im2col is 2x faster from 1 to 2 threads, then flat up the ladder
    # and oversubscribed; the 2-core column has no scaling group.
    assert judged[("im2col_no_slowdown", big)].measured.value == pytest.approx(1.0)
    assert judged[("im2col_no_slowdown", big)].verdict == "met"
    assert judged[("im2col_no_slowdown", small)].verdict == "not measured"
    # engine_overhead: the overhead record's ratio.
    assert judged[("engine_overhead", small)].measured.value == pytest.approx(1.2)
    assert judged[("engine_overhead", small)].verdict == "MISSED"
    # faster_than_im2col: conv2 and conv3 measured, the channel sweep's c64 not.
    winograd = judged[("winograd_vs_im2col", small)]
    assert winograd.measured.value == pytest.approx(im2col / RECIPE_SPEED["winograd"])
    assert winograd.verdict == "not measured" and "c64" in winograd.measured.detail
    # auto_vs_fastest: auto at 1.1 ms against torch's 1 ms.
    assert metrics.auto_vs_fastest(frame, small).value == pytest.approx(1.1)

    table = metrics.speed_target_table(list(judged.values()))
    assert list(table.columns) == ["target", small, big]
    assert len(table) == len(policy.SPEED_TARGETS)
    row = table[table["target"] == policy.SPEED_TARGETS[0].name].iloc[0]
    assert row[small] == "0.50× met" and row[big] == "0.50× met"


@pytest.fixture(scope="module")
def two_machine_report(workdir, two_machines) -> tuple[str, Path]:
    """The report of both machines, plus a later run in the 2-core column (its SGEMM only)."""
    again = write_run(
        workdir / "again.json", [sgemm_record(median=0.04)], datetime="2026-12-01T00:00:00"
    )
    out = workdir / "two-machines"
    build([*two_machines, again], out, no_run=True)
    return (out / "REPORT.md").read_text(encoding="utf-8"), again


def test_runs_side_by_side_one_column_per_machine_and_threads(two_machine_report, two_machines):
    text, again = two_machine_report
    rows = _table_rows(_section(text, "### Conv layers of the CIFAR-10 recipe"), "case")
    assert set(rows[0]) == {
        "case",
        "pass",
        "backend",
        "Small Xeon 2c · 2 thr",
        "Big Xeon 16c · 16 thr",
    }
    targets = _table_rows(_section(text, "### Speed targets"), "target")
    assert {"Small Xeon 2c · 2 thr", "Big Xeon 16c · 16 thr"} == set(targets[0]) - {"target"}
    # the steps in threads, up to the oversubscribed one, and that test's own rows
    scaling = text.split("### Scaling with threads\n", 1)[1].split("\n### ", 1)[0]
    steps = {row["backend"]: row for row in _table_rows(scaling, "backend")}
    assert steps["im2col"]["1→2"] == "0.50×" and steps["im2col"]["16→32 oversubscribed"] == "1.00×"
    oversubscribed = _table_rows(scaling.split("Oversubscribed, each layer and pass:")[1], "layer")
    assert len(oversubscribed) == 2 * len(PASSES)
    assert {row["threads"] for row in oversubscribed} == {"16→32"}
    glance = _section(text, "## At a glance")
    assert "**Mixed sources**" in glance and "2 machines" in glance
    assert "BLAS kernels narrower" not in glance  # no CPU flags recorded: nothing to judge
    # The SGEMM peak says which BLAS kernels and which machine it was measured with.
    assert "Haswell kernels" in glance and "SkylakeX kernels" in glance
    assert "Small Xeon 2c · 2 thr: 429 GFLOP/s with OpenBLAS 0.3.30 (Haswell kernels)" in glance
    # The later run of the same column replaced that column's SGEMM: no new column.
    peaks = tables.sgemm_peaks(frame_of(*two_machines, again))
    assert set(peaks) == {"Small Xeon 2c · 2 thr", "Big Xeon 16c · 16 thr"}
    assert peaks["Small Xeon 2c · 2 thr"].gflops == pytest.approx(2 * 2048**3 / 0.04 / 1e9)


def test_old_schema_runs_load_and_are_shown_as_old_code():
    run = load.load_file(
        REPO / "reports" / "benchmarks" / "before-c8897cd-xeon16-bench-2threads.json"
    )
    assert run.old_schema
    frame = tables.benchmark_frame([run])
    (column,) = tables.column_order(frame)
    assert column == "Intel Xeon 16c · 2 thr · old code c8897cd"
    assert frame["passed"].isna().all()  # no verdicts: not failures either
    assert tables.failures(frame, None) == {}


def test_old_schema_and_changed_code_runs_of_one_commit_stay_apart():
    """The committed 16-core runs of c8897cd in both record schemas: two columns, so that no
    column holds two records of one benchmark (the throughput plot indexes them by layer)."""
    old, new = (
        load.load_file(REPO / "reports" / "benchmarks" / name)
        for name in ("before-c8897cd-xeon16-bench-16threads.json", "xeon16-recipe.json")
    )
    commit = provenance.recorded_source(new.machine, new.commit)[0]
    if provenance.code_status(commit, paths=provenance.SUITE_CODE).changed is not True:
        pytest.skip("c8897cd is not in this checkout's history")
    frame = tables.benchmark_frame([old, new])
    assert set(tables.column_order(frame)) == {
        "Intel Xeon 16c · 16 thr · old code c8897cd",
        "Intel Xeon 16c · 16 thr · at c8897cd",
    }
    assert plots.throughput(frame, {}) is not None


def test_each_run_is_also_judged_alone_and_disagreeing_runs_are_said(workdir):
    """Two overhead runs of one machine, 1.30 (MISSED) then 1.10 (met): the column shows the
    worse of the two (the middle value of an even count: met in one run of two is not met),
    not the later one, and both runs' verdicts; a target only one run measured shows its value
    alone."""
    first = write_run(
        workdir / "first.json",
        recipe_records() + [overhead_record(engine=0.011, twin=0.010)],
        datetime="2026-11-29T00:00:00",
    )
    # the second run's recipe is twice as slow, torch included: im2col / torch is 0.5 in both
    second = write_run(
        workdir / "second.json",
        recipe_records(scale=2.0) + [overhead_record(engine=0.013, twin=0.010)],
        datetime="2026-11-28T00:00:00",
    )
    runs = [load.load_file(f) for f in (second, first)]
    order = ["first.json", "second.json"]
    by_run = metrics.judge_runs(tables.benchmark_frame(runs, merge=False), order)
    column = "Small Xeon 2c · 2 thr"
    overhead = by_run[("engine_overhead", column)]
    assert [j.measured.value for j in overhead] == [pytest.approx(1.1), pytest.approx(1.3)]
    assert [j.verdict for j in overhead] == ["met", "MISSED"]
    assert metrics.runs_summary(overhead) == "met in 1 of 2 runs, 1.10× to 1.30×"
    # each run against its own torch (against the other's: 0.25 and 1.0)
    ratios = by_run[("im2col_vs_torch", column)]
    assert [j.measured.value for j in ratios] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert ("engine_overhead", "Small Xeon 2c · 1 thr") not in by_run

    out = workdir / "out"
    build([first, second], out, no_run=True)
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    rows = {r["target"].split(" (")[0]: r[column] for r in _table_rows(text, "target")}
    overhead_row = rows["engine + torch kernel ≤ 1.15× the plain-torch twin"]
    assert overhead_row == "1.30× MISSED (met in 1 of 2 runs, 1.10× to 1.30×)"
    assert rows["im2col ≥ 0.5× torch"] == "0.50× met (met in 2 of 2 runs, 0.50× to 0.50×)"
    glance = _section(text, "## At a glance")
    assert (
        "**Runs disagree**, each judged alone: `engine_overhead` in Small Xeon 2c · 2 thr: met "
        "in 1 of 2 runs, 1.10× to 1.30×." in glance
    )


def test_a_higher_is_better_target_over_runs_is_judged_on_their_middle_value():
    target = next(t for t in policy.SPEED_TARGETS if t.key == "im2col_vs_torch")
    assert target.higher and target.threshold == pytest.approx(0.5)

    def judged(value):
        return metrics.Judged(target, "column", metrics.Measured(value, True, "merged"))

    for values, stated, verdict in [
        ((0.6, 0.45, 0.55), 0.55, "met"),  # 2 of 3
        ((0.6, 0.45, 0.48), 0.48, "MISSED"),  # 1 of 3
        ((0.6, 0.45), 0.45, "MISSED"),  # 1 of 2: the worse middle one
        ((0.6, 0.52, 0.45, 0.7), 0.52, "met"),  # 3 of 4
    ]:
        runs = {(target.key, "column"): [judged(v) for v in values]}
        (over,) = metrics.over_runs([judged(values[-1])], runs)
        assert (over.measured.value, over.verdict) == (pytest.approx(stated), verdict)


@pytest.mark.parametrize(
    ("engine_ms", "stated", "verdict"),
    [
        ((11, 13, 11.2), 1.12, "met"),  # 2 of 3 met: the median
        ((13, 11, 11.2), 1.12, "met"),  # the same runs, another order: the same verdict
        ((11, 13, 13.2), 1.30, "MISSED"),  # 1 of 3
        ((11, 11.2, 13, 13.2), 1.30, "MISSED"),  # 2 of 4: the worse of the two middle ones
        ((11, 11.2, 11.3, 13.2), 1.13, "met"),  # 3 of 4
    ],
    ids=["2-of-3", "2-of-3-reordered", "1-of-3", "2-of-4", "3-of-4"],
)
def test_a_target_several_runs_measured_is_judged_on_their_middle_value(
    workdir, engine_ms, stated, verdict
):
    """The stated value of the engine-overhead target (lower is better) over runs of one
    column is their median, the worse middle one for an even count; the later run's value
    decides nothing, and the merged value stays in the detail."""
    runs = []
    for day, engine in enumerate(engine_ms, start=1):
        path = write_run(
            workdir / f"run{day}.json",
            [overhead_record(engine=engine / 1e3, twin=0.010)],
            datetime=f"2026-11-{day:02d}T00:00:00",
        )
        runs.append(load.load_file(path))
    order = [f"run{day}.json" for day in range(1, len(engine_ms) + 1)]
    by_run = metrics.judge_runs(tables.benchmark_frame(runs, merge=False), order)
    merged = metrics.judge_all(tables.benchmark_frame(runs))
    (overhead,) = [
        j for j in metrics.over_runs(merged, by_run) if j.target.key == "engine_overhead"
    ]
    assert overhead.measured.value == pytest.approx(stated)
    assert overhead.verdict == verdict
    latest = engine_ms[-1] / 10
    assert f"the runs merged, each benchmark's latest record: {latest:.2f}×" in (
        overhead.measured.detail
    )
    middle = order[engine_ms.index(round(stated * 10, 1))]  # the run whose value is stated
    assert overhead.measured.detail.startswith(
        f"middle of the values of {len(engine_ms)} runs, each judged alone: {middle}, "
    )


def test_a_run_of_one_thread_count_is_no_scaling_measure(workdir):
    """A scaling run at 1 and 2 threads, then one at 2 threads only: the second gives no
    speed-up (not a 1.00x "met") and is judged in no column of its own."""
    ladder = write_run(workdir / "ladder.json", scaling_records(ladder=(1, 2)))
    top = write_run(
        workdir / "top.json", scaling_records(ladder=(2,)), datetime="2026-11-28T00:00:00"
    )
    runs = [load.load_file(f) for f in (ladder, top)]
    by_run = metrics.judge_runs(tables.benchmark_frame(runs, merge=False))
    (judged,) = by_run[("im2col_scaling", "Small Xeon 2c · 2 thr")]
    assert judged.measured.value == pytest.approx(1.0)  # 1 -> 2 threads: im2col 2x, GEMM 2x
    top_alone = tables.benchmark_frame([runs[1]])
    assert not metrics.scaling_vs_gemm(top_alone, "Small Xeon 2c · 2 thr", "im2col").complete


def _steps_run(workdir, name, ladder_extra=None, **oversubscribed):
    """A 4-core run: the scaling group at 1, 2, 4 threads (im2col times ``ladder_extra`` at
    4 threads), and, with ``oversubscribed``, the oversubscribed test at 8."""
    records = scaling_records(ladder=(1, 2, 4))
    for record in records:
        extra = record["extra_info"]
        if ladder_extra and extra["backend"] == "im2col" and extra["threads"] == 4:
            record["stats"]["median"] *= ladder_extra
    if oversubscribed:
        records += oversubscribed_records(cores=4, **oversubscribed)
    path = write_run(workdir / name, records, nnbench=machine(cores=4, threads=4))
    return frame_of(path)


@pytest.mark.parametrize(
    ("rounds", "ratio", "ratio_of"), [(True, 1.2, "rounds"), (False, 1.3, "medians")],
    ids=["paired", "unpaired"],
)  # fmt: skip
def test_the_oversubscribed_ratio_pairs_the_rounds_where_it_has_them(
    workdir, rounds, ratio, ratio_of
):
    """Paired: the machine slowed down 3x halfway through the test, and each round's
    oversubscribed call took 1.2x the call at the cores beside it, which the ratio of the
    medians (3.6 / 1) hides. Unpaired (records without their rounds): the ratio of the medians."""
    records = oversubscribed_records(cores=4, ratio=1.0 if rounds else 1.3)
    if rounds:
        at_cores = [1e-3, 1e-3, 1e-3, 3e-3, 3e-3]
        oversubscribed = [1.2e-3, 1.2e-3, 3.6e-3, 3.6e-3, 3.6e-3]
        for record in records:
            record["stats"].update(data=oversubscribed, median=statistics.median(oversubscribed))
            record["extra_info"]["beside_rounds_s"] = {"cores": at_cores}
    path = write_run(workdir / f"{ratio_of}.json", records, nnbench=machine(cores=4, threads=4))
    over = metrics.oversubscription(frame_of(path), "Small Xeon 4c")
    assert over["ratio"].tolist() == pytest.approx([ratio] * len(records))
    assert set(over["ratio of"]) == {ratio_of}


def test_thread_steps_go_up_the_ladder_then_oversubscribed(workdir):
    # torch was timed oversubscribed only: its row has no ladder step, the columns keep order
    frame = _steps_run(workdir, "steps.json", ratio={"forward": 1.3}, backends=("torch", "im2col"))
    steps = metrics.thread_steps(frame, "Small Xeon 4c")
    assert list(steps.columns) == ["backend", "1→2", "2→4", "4→8 oversubscribed"]
    im2col = steps.set_index("backend").loc["im2col"]
    assert (im2col["1→2"], im2col["2→4"]) == (pytest.approx(0.5), pytest.approx(1.0))
    # 1.3x on forward, 1x on the other passes, over two layers: 1.3 ** (2 / 6)
    assert im2col["4→8 oversubscribed"] == pytest.approx(1.3 ** (1 / 3))
    torch = steps.set_index("backend").loc["torch"]
    assert torch.isna().tolist() == [True, True, False]
    judged = metrics.slowdown_with_threads(frame, "Small Xeon 4c · 4 thr", "im2col")
    assert judged.complete and judged.value == pytest.approx(1.3 ** (1 / 3))
    assert "largest at 4→8 oversubscribed threads" in judged.detail
    # the geometric mean does not hide which call got slower, nor by how much
    assert "slowest single (layer, pass):" in judged.detail
    assert "forward at 4→8 oversubscribed, 1.30×" in judged.detail
    target = next(t for t in policy.SPEED_TARGETS if t.key == "im2col_no_slowdown")
    assert policy.judge(judged.value, target.threshold, target.higher) == "met"  # 1.09 <= 1.1
    # the oversubscribed records' column is no column of its own for the targets
    assert metrics.target_columns(frame) == ["Small Xeon 4c · 4 thr"]


@pytest.mark.parametrize(
    ("ladder_extra", "ratio", "worst"),
    [(1.0, 2.0, "4→8 oversubscribed"), (1.5, 1.0, "2→4")],
    ids=["oversubscription-collapses", "slower-up-the-ladder"],
)
def test_a_backend_slower_with_more_threads_misses(workdir, ladder_extra, ratio, worst):
    frame = _steps_run(workdir, f"slow-{worst}.json", ladder_extra=ladder_extra, ratio=ratio)
    judged = metrics.slowdown_with_threads(frame, "Small Xeon 4c · 4 thr", "im2col")
    assert judged.value == pytest.approx(max(ladder_extra, ratio))
    assert f"largest at {worst} threads" in judged.detail
    assert policy.judge(judged.value, 1.1, higher=False) == "MISSED"


def test_no_oversubscribed_test_leaves_the_slowdown_partial(workdir):
    judged = metrics.slowdown_with_threads(
        _steps_run(workdir, "ladder-only.json"), "Small Xeon 4c · 4 thr", "im2col"
    )
    assert judged.value == pytest.approx(1.0) and not judged.complete
    assert "no oversubscribed step measured" in judged.detail


def test_one_core_is_judged_on_its_oversubscribed_step_alone(workdir):
    records = scaling_records(ladder=(1,)) + oversubscribed_records(cores=1, ratio=1.05)
    path = write_run(workdir / "one-core.json", records, nnbench=machine(cores=1, threads=1))
    judged = metrics.slowdown_with_threads(frame_of(path), "Small Xeon 1c · 1 thr", "im2col")
    assert judged.complete and judged.value == pytest.approx(1.05)
    assert "largest at 1→2 oversubscribed threads" in judged.detail


def test_at_a_glance_answers_from_the_data(two_machine_report):
    glance = _section(two_machine_report[0], "## At a glance")
    assert "No failures" in glance
    assert "MISSED**" in glance and "`im2col_bound` (≤ 1.5×) in 2 columns, 2.00× to 2.00×" in glance
    assert "`torch` in 18" in glance  # fastest in every (layer, pass, column)
    fastest = _table_rows(glance, "layer")
    assert fastest[0]["Small Xeon 2c · 2 thr"] == "torch 1.00 ms; numpy: im2col 2.00 ms"
    assert "does not beat" not in glance


def test_auto_is_judged_on_its_interleaved_rounds_where_they_timed_the_fastest(workdir):
    """auto (1.1 ms) beside torch (1.05 ms in auto's rounds; 1 ms in torch's own record): the
    interleaved ratio counts. Where auto's rounds did not time the fastest backend (fft
    given up), the separately timed records count."""
    records = recipe_records(beside_median_s={"torch": 1.05e-3, "im2col": 2e-3})
    frame = frame_of(write_run(workdir / "beside.json", records))
    column = "Small Xeon 2c · 2 thr"
    table = metrics.auto_choices(frame, column)
    assert set(table["timed"]) == {"interleaved"}
    assert table["auto / fastest"].to_numpy() == pytest.approx(1.1 / 1.05)
    assert metrics.auto_vs_fastest(frame, column).value == pytest.approx(1.1 / 1.05)
    assert "interleaved 9" in metrics.auto_vs_fastest(frame, column).detail

    records = recipe_records(beside_median_s={"im2col": 2e-3, "loop": 4e-3})
    table = metrics.auto_choices(frame_of(write_run(workdir / "not-beside.json", records)), column)
    assert set(table["timed"]) == {"separately"} and set(table["fastest single backend"]) == {
        "torch"
    }
    assert table["auto / fastest"].to_numpy() == pytest.approx(1.1)

    # a backend whose own record failed is not the fastest, even if it was fast beside auto
    records = recipe_records(beside_median_s={"torch": 1.05e-3, "loop": 0.5e-3})
    for record in records:
        if record["extra_info"]["backend"] == "loop":
            record["extra_info"]["verdict"]["passed"] = False
    table = metrics.auto_choices(frame_of(write_run(workdir / "failed.json", records)), column)
    assert set(table["fastest single backend"]) == {"torch"}
    assert table["auto / fastest"].to_numpy() == pytest.approx(1.1 / 1.05)


def test_auto_is_judged_on_paired_rounds_where_they_timed_itself_and_the_fastest(workdir):
    """Rounds of auto, torch and im2col: torch has the smallest median; the ratio is the median
    of auto / torch round by round (a slow round slows both: it cancels), not of the medians."""
    rounds = {
        "auto": [1.1e-3, 2.2e-3, 1.0e-3, 3.3e-3, 1.2e-3],
        "torch": [1.0e-3, 2.0e-3, 1.0e-3, 3.0e-3, 1.0e-3],
        "im2col": [2.0e-3, 2.0e-3, 2.0e-3, 2.0e-3, 2.0e-3],
    }
    records = recipe_records(beside_rounds_s=rounds, beside_median_s={"torch": 2e-3})
    frame = frame_of(write_run(workdir / "paired.json", records))
    column = "Small Xeon 2c · 2 thr"
    table = metrics.auto_choices(frame, column)
    assert set(table["timed"]) == {"paired"} and set(table["fastest single backend"]) == {"torch"}
    # ratios 1.1, 1.1, 1.0, 1.1, 1.2: median 1.1 (the medians' ratio would be 1.2 / 1.0)
    assert table["auto / fastest"].to_numpy() == pytest.approx(1.1)
    assert table["auto (ms)"].to_numpy() == pytest.approx(1.2)
    assert table["its median (ms)"].to_numpy() == pytest.approx(1.0)
    measured = metrics.auto_vs_fastest(frame, column)
    assert measured.value == pytest.approx(1.1) and "paired 9" in measured.detail
    assert "auto ran the fastest backend in 9 of 9, largest where it did 1.10× (" in (
        measured.detail
    )
    assert "ran another" not in measured.detail

    # where auto ran another backend than the fastest, the detail says which, apart
    for record in [r for r in records if r["extra_info"]["backend"] == "auto"][:2]:
        record["extra_info"]["auto_choice"] = "im2col"
    detail = metrics.auto_vs_fastest(frame_of(write_run(workdir / "other.json", records)), column)
    assert "auto ran the fastest backend in 7 of 9, largest where it did 1.10× (" in detail.detail
    assert "largest where it ran another 1.10× (" in detail.detail
    assert "im2col against torch)" in detail.detail
    # a record made before auto's choice was recorded counts in neither
    [r for r in records if r["extra_info"]["backend"] == "auto"][-1]["extra_info"].pop(
        "auto_choice"
    )
    detail = metrics.auto_vs_fastest(frame_of(write_run(workdir / "older.json", records)), column)
    assert "auto ran the fastest backend in 6 of 8," in detail.detail

    # rounds without the suite's fastest backend (torch given up): the separate records count
    partial = {name: times for name, times in rounds.items() if name != "torch"}
    records = recipe_records(beside_rounds_s=partial)
    table = metrics.auto_choices(frame_of(write_run(workdir / "partial.json", records)), column)
    assert set(table["timed"]) == {"separately"}

    # a backend whose own record failed is not the fastest, even when its rounds are faster
    fast_but_wrong = {**rounds, "loop": [0.5e-3] * 5}
    records = recipe_records(beside_rounds_s=fast_but_wrong)
    for record in records:
        if record["extra_info"]["backend"] == "loop":
            record["extra_info"]["verdict"]["passed"] = False
    table = metrics.auto_choices(frame_of(write_run(workdir / "failed.json", records)), column)
    assert set(table["fastest single backend"]) == {"torch"} and set(table["timed"]) == {"paired"}

    # a failed auto result is not judged at all: it is not fast, it is wrong
    records = recipe_records(beside_rounds_s=rounds)
    for record in records:
        if record["extra_info"]["backend"] == "auto":
            record["extra_info"]["verdict"]["passed"] = False
    frame = frame_of(write_run(workdir / "auto-failed.json", records))
    assert metrics.auto_choices(frame, column).empty
    assert metrics.auto_vs_fastest(frame, column).complete is False


def test_auto_alone_is_judged_on_its_rounds_and_its_control_is_not_a_backend(workdir):
    """A run of auto alone (no single-backend records) is judged on the backends of its rounds;
    the control (auto's choice, torch, timed twice) is shown as control / choice and is never
    the fastest backend, though its median is the smallest."""
    rounds = {
        "auto": [1.1e-3, 2.2e-3, 1.0e-3, 3.3e-3, 1.2e-3],
        "torch": [1.0e-3, 2.0e-3, 1.0e-3, 3.0e-3, 1.0e-3],
        "im2col": [2.0e-3] * 5,
        metrics.CONTROL: [0.9e-3, 1.8e-3, 0.9e-3, 2.7e-3, 0.9e-3],
    }
    column = "Small Xeon 2c · 2 thr"
    everything = recipe_records(beside_rounds_s=rounds)
    alone = [r for r in everything if r["extra_info"]["backend"] == "auto"]
    for name, records in (("alone.json", alone), ("all.json", everything)):
        frame = frame_of(write_run(workdir / name, records))
        table = metrics.auto_choices(frame, column)
        timed = "paired" if name == "all.json" else "paired (candidates)"
        assert len(table) == 9 and set(table["timed"]) == {timed}, name
        assert set(table["fastest single backend"]) == {"torch"}, name
        assert table["auto / fastest"].to_numpy() == pytest.approx(1.1)
        assert table["control / choice"].to_numpy() == pytest.approx(0.9)
        detail = metrics.auto_vs_fastest(frame, column).detail
        assert (
            "against itself in the same rounds (control): 0.90× to 0.90×, median 0.90×, over 9"
            in detail
        )

    # a candidate whose own record failed is never the fastest, even in a run with no passed
    # single-backend record
    torch_failed = [copy.deepcopy(r) for r in everything if r["extra_info"]["backend"] == "torch"]
    for record in torch_failed:
        record["extra_info"]["verdict"]["passed"] = False
    frame = frame_of(write_run(workdir / "torch-failed.json", alone + torch_failed))
    table = metrics.auto_choices(frame, column)
    assert set(table["timed"]) == {"paired (candidates)"}
    assert set(table["fastest single backend"]) == {"im2col"}
    assert table["auto / fastest"].to_numpy() == pytest.approx(
        statistics.median(a / b for a, b in zip(rounds["auto"], rounds["im2col"]))
    )

    # a run where some auto records have a control and some (older records) none
    mixed = recipe_records(beside_rounds_s=rounds)
    for record in mixed[: len(mixed) // 2]:
        record["extra_info"]["beside_rounds_s"] = {
            n: t for n, t in rounds.items() if n != metrics.CONTROL
        }
    table = metrics.auto_choices(frame_of(write_run(workdir / "mixed.json", mixed)), column)
    assert table["control / choice"].isna().any() and table["control / choice"].notna().any()
    assert "over " + str(table["control / choice"].notna().sum()) in (
        metrics.auto_vs_fastest(frame_of(write_run(workdir / "mixed.json", mixed)), column).detail
    )

    # without paired rounds, auto alone cannot be judged: nothing to compare it with
    frame = frame_of(write_run(workdir / "bare.json", [dict(r) for r in recipe_records()][-1:]))
    assert metrics.auto_choices(frame, column).empty


def test_auto_shows_what_its_trial_did_to_the_race(workdir):
    """The race's choice (``auto_race``, or in older records the finalist, a key of
    ``auto_trial``, of smallest race median): "kept" where the trial kept it, "from <it>" where
    the trial changed it, "—" without a trial; the detail counts the changes."""
    rounds = {"auto": [1.0e-3] * 5, "torch": [1.0e-3] * 5, "im2col": [2.0e-3] * 5}
    column = "Small Xeon 2c · 2 thr"
    records = recipe_records(beside_rounds_s=rounds)
    autos = [r["extra_info"] for r in records if r["extra_info"]["backend"] == "auto"]
    assert len(autos) == 9 and {a["auto_choice"] for a in autos} == {"torch"}
    raced = {"torch": 1.0e-3, "im2col": 0.9e-3, "fft": 5e-3, "loop": None}
    for extra in autos[:2]:  # the race chose im2col (fft was not a finalist); the trial, torch
        extra.update(auto_seconds=raced, auto_trial={"torch": 1.0e-3, "im2col": 1.3e-3})
    for extra in autos[2:5]:  # the race chose torch, and the trial kept it
        extra.update(auto_seconds={**raced, "im2col": 1.2e-3}, auto_trial={"torch": 1e-3,
                     "im2col": 1.1e-3})  # fmt: skip
    for extra in autos[5:7]:  # one finalist: no trial
        extra.update(auto_seconds=raced, auto_trial=None)
    # recorded: the race chose loop (in rounds after the first five, which the medians lack)
    autos[7].update(auto_seconds=raced, auto_trial={"torch": 1e-3, "loop": 2e-3},
                    auto_race="loop")  # fmt: skip
    frame = frame_of(write_run(workdir / "trial.json", records))
    table = metrics.auto_choices(frame, column)
    assert list(table["trial"]) == ["from im2col"] * 2 + ["kept"] * 3 + ["—"] * 2 + [
        "from loop",
        "—",
    ]
    assert "the trial changed the race's choice in 3 of 6" in (
        metrics.auto_vs_fastest(frame, column).detail
    )


def test_the_auto_step_is_judged_on_paired_rounds(workdir):
    rounds = {
        "auto": [0.52, 0.61, 0.50, 0.70, 0.51],
        "torch": [0.50, 0.60, 0.50, 0.66, 0.50],
        "im2col": [0.80] * 5,
    }
    records = [
        _record("torch", "step", "step", "cifar10-fast", 0.5, flops=2e9),
        _record("im2col", "step", "step", "cifar10-fast", 0.8, flops=2e9),
        _record("auto", "step", "step", "cifar10-fast", 0.55, flops=2e9, beside_rounds_s=rounds),
    ]
    frame = frame_of(write_run(workdir / "step.json", records))
    measured = metrics.auto_step_vs_fastest(frame, "Small Xeon 2c · 2 thr")
    # per-round ratios 1.04, 1.017, 1.0, 1.061, 1.02: median 1.02 (of the medians: 1.04)
    assert measured.value == pytest.approx(1.02)
    assert measured.detail == "auto 520 ms / torch 500 ms per step, timed paired"
    # a run of auto alone: against the models timed in its rounds
    alone = frame_of(write_run(workdir / "alone.json", records[2:]))
    measured = metrics.auto_step_vs_fastest(alone, "Small Xeon 2c · 2 thr")
    assert measured.value == pytest.approx(1.02)
    assert measured.detail.endswith("timed paired (candidates)")
    bare = [_record("auto", "step", "step", "cifar10-fast", 0.55, flops=2e9)]
    frame = frame_of(write_run(workdir / "bare.json", bare))
    assert not metrics.auto_step_vs_fastest(frame, "Small Xeon 2c · 2 thr").complete
    # torch's own step record failed its check: auto against im2col, the one left
    failed = [_record("torch", "step", "step", "cifar10-fast", 0.5, flops=2e9, passed=False)]
    frame = frame_of(write_run(workdir / "failed.json", failed + records[2:]))
    measured = metrics.auto_step_vs_fastest(frame, "Small Xeon 2c · 2 thr")
    assert " / im2col " in measured.detail
    assert measured.value == pytest.approx(statistics.median(
        a / b for a, b in zip(rounds["auto"], rounds["im2col"])))  # fmt: skip


def test_the_distance_to_the_bound_comes_from_the_rounds_beside_the_replay(workdir):
    """A run that timed the call beside its GEMMs (``gemm_bound_call_s``) is judged on that
    median, not on the benchmark's own (taken in other rounds); one without it is judged on its
    own median and said to use the older replay."""
    column = "Small Xeon 2c · 2 thr"
    records = recipe_records()
    for record in records:
        extra = record["extra_info"]
        if extra.get("gemm_bound_s"):
            extra["gemm_bound_call_s"] = 3 * extra["gemm_bound_s"]  # median: 2x the GEMMs
    frame = frame_of(write_run(workdir / "beside.json", records))
    measured = metrics.distance_to_bound(frame, column, "im2col")
    assert measured.value == pytest.approx(3.0) and metrics.OLD_REPLAY not in measured.detail
    table = metrics.bound_table(frame)
    assert np.allclose(table["call / GEMMs"], 3.0)
    assert np.allclose(table["call beside its GEMMs (ms)"], 3 * table["its GEMMs alone (ms)"])
    older = metrics.distance_to_bound(frame_of(write_run(workdir / "older.json",
                                                         recipe_records())), column, "im2col")  # fmt: skip
    assert older.value == pytest.approx(2.0) and metrics.OLD_REPLAY in older.detail


def test_bound_overhead_auto_and_routes_are_shown(two_machines, two_machine_report):
    frame = frame_of(*two_machines)
    bound = metrics.bound_table(frame)
    row = bound[(bound["backend"] == "im2col")].iloc[0]
    assert row["call / GEMMs"] == pytest.approx(2.0)
    assert (row["layout copies %"], row["GEMM %"], row["col2im / reduction %"]) == (
        pytest.approx(30.0),
        pytest.approx(50.0),
        pytest.approx(20.0),
    )
    overhead = metrics.overhead_table(frame)
    assert overhead.iloc[0]["engine / torch"] == pytest.approx(1.2)
    auto = metrics.auto_choices(frame, "Small Xeon 2c · 2 thr")
    assert set(auto["auto ran"]) == {"torch"} and set(auto["fastest single backend"]) == {"torch"}
    text = two_machine_report[0]
    for title in ("### Own GEMM bound", "### Engine overhead", "### auto's choices"):
        assert title in text
    if "winograd" in kernels.available():
        assert "winograd (via im2col)" in text
        assert "`winograd` grad_kernels: im2col" in _section(text, "### Routes")


# --- scaling ------------------------------------------------------------------------------------


def test_scaling_table_and_plot(two_machines, workdir):
    frame = frame_of(*two_machines)
    table = metrics.speedups(frame, "Big Xeon 16c")
    row = table[(table["backend"] == "im2col") & (table["pass"] == "forward")].iloc[0]
    assert row["1 thr"] == pytest.approx(8.0) and row["16 thr"] == pytest.approx(4.0)
    assert (row["speed-up"], row["GEMM speed-up"]) == (pytest.approx(2.0), pytest.approx(16.0))
    assert row["ratio to GEMM"] == pytest.approx(2 / 16) and row["GEMM timed"] == "own records"

    # the GEMM timed in im2col's own rounds: 10 ms at 1 thread, 1 ms at 16 (10x, not the 16x
    # of its own records) is what im2col's 2x is held against
    records = scaling_records(ladder=(1, 16))
    for record in records:
        extra = record["extra_info"]
        if extra["backend"] == "im2col":
            extra["beside_median_s"] = {"gemm": 10e-3 / extra["threads"] ** (1 / 1.204)}
    table = metrics.speedups(frame_of(write_run(workdir / "beside.json", records)), "Small Xeon 2c")
    row = table[(table["backend"] == "im2col") & (table["pass"] == "forward")].iloc[0]
    assert row["GEMM speed-up"] == pytest.approx(16 ** (1 / 1.204))
    assert row["ratio to GEMM"] == pytest.approx(2 / 16 ** (1 / 1.204))
    assert row["GEMM timed"] == "same rounds"
    # one of the two thread counts without it: that row falls back to the GEMM's own records
    for record in records:
        extra = record["extra_info"]
        if extra["backend"] == "im2col" and extra["pass"] == "forward" and extra["threads"] == 16:
            del extra["beside_median_s"]
    table = metrics.speedups(frame_of(write_run(workdir / "mixed.json", records)), "Small Xeon 2c")
    timed = table[table["backend"] == "im2col"].set_index(["layer", "pass"])["GEMM timed"]
    assert set(timed.xs("forward", level="pass")) == {"own records"}
    assert set(timed.xs("grad_inputs", level="pass")) == {"same rounds"}

    fig = plots.scaling(frame, "Big Xeon 16c")
    axes = fig.axes
    ax = axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    reference = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(reference) == 1 and reference[0].get_color() == plots.REFERENCE["color"]
    assert list(reference[0].get_ydata()) == pytest.approx([1, 2, 4, 8, 16])
    low, high = ax.get_ylim()
    assert low <= 1 and high >= 16  # the reference line lies inside the axes
    assert all(a.get_ylim() == ax.get_ylim() for a in axes)  # one y axis for the layers


# --- figures a reader can trust ------------------------------------------------------------------


def test_a_crossover_is_bracketed_by_measured_sizes_and_a_short_sweep_is_partial(tmp_path):
    # The quick set's sweep: k = 3 and 7 only. fft loses at 3 and wins at 7.
    frame = frame_of(write_run(tmp_path / "sweep.json", sweep_records()))
    (c,) = [c for c in tables.crossovers(frame) if c.against == "im2col"]
    assert (c.kernel_sizes, c.below, c.at, c.partial) == ((3, 7), 3, 7, True)
    sentence = c.sentence()
    assert "between k = 3 and k = 7" in sentence and "partial sweep" in sentence
    assert "at k = 7" not in sentence and "k ≤" not in sentence

    fig = plots.kernel_sweep(frame, tables.crossovers(frame))
    (ax,) = fig.axes
    spans = [
        p
        for p in ax.patches
        if p.get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(plots.SPAN_COLOR))
    ]
    (span,) = spans  # the span between the measured sizes, not a line at one of them
    # axvspan draws in (data x, axes y): the span's corners in data x are its extent.
    corners = span.get_patch_transform().transform(span.get_path().vertices)
    xs = corners[:, 0]
    assert (xs.min(), xs.max()) == pytest.approx((3, 7))
    assert "partial sweep" in ax.get_title()
    assert [int(t) for t in ax.get_xticks()] == [3, 7]

    full = frame_of(
        write_run(
            tmp_path / "full.json",
            sweep_records(sizes=(1, 3, 5), fft=(1.0, 2.0, 3.0), im2col=(2.0, 3.0, 4.0)),
        )
    )
    (everywhere,) = [c for c in tables.crossovers(full) if c.against == "im2col"]
    assert not everywhere.partial and everywhere.below is None
    assert everywhere.sentence().startswith("`fft` is faster than `im2col` at every k measured")


def test_timing_figures_show_the_interquartile_range_and_mark_wide_ones(two_machines, tmp_path):
    records = recipe_records()
    for record in records:  # torch on conv1 forward is noisy: IQR 40% of its median
        info = record["extra_info"]
        if (info["backend"], info["label"], info["pass"]) == ("torch", "fast/conv1", "forward"):
            record["stats"]["q1"], record["stats"]["q3"] = 0.8e-3, 1.2e-3
    frame = frame_of(write_run(tmp_path / "noisy.json", records + [sgemm_record()]))
    data = plots.throughput_data(frame)
    row = data[
        (data["backend"] == "torch") & (data["label"] == "fast/conv1") & (data["pass"] == "forward")
    ].iloc[0]
    assert row["noisy"] and (row["gflops_low"], row["gflops_high"]) == (
        pytest.approx(1e9 / 1.2e-3 / 1e9),
        pytest.approx(1e9 / 0.8e-3 / 1e9),
    )
    fig = plots.throughput(frame, tables.sgemm_peaks(frame))
    ax = plots.figure_axes(fig)[0]  # forward
    torch_bars = [
        b
        for b in ax.patches
        if b.get_facecolor()[:3] == pytest.approx(matplotlib.colors.to_rgb(plots.color("torch")))
    ]
    assert torch_bars[0].get_hatch() == plots.NOISY_HATCH
    assert not torch_bars[1].get_hatch()
    whiskers = [c for c in ax.collections if c.get_segments()]
    spans = sorted(
        (round(seg[:, 1].min(), 6), round(seg[:, 1].max(), 6))
        for c in whiskers
        for seg in c.get_segments()
    )
    assert (round(row["gflops_low"], 6), round(row["gflops_high"], 6)) in spans

    sweep = frame_of(write_run(tmp_path / "sweep.json", sweep_records()))
    (sweep_ax,) = plots.kernel_sweep(sweep, []).axes
    bands = [c for c in sweep_ax.collections if len(c.get_paths())]
    assert len(bands) == 2  # one IQR band per backend

    curves = metrics.scaling_curves(frame_of(*two_machines), "Big Xeon 16c")
    one = curves[(curves["backend"] == "im2col") & (curves["threads"] == 16)].iloc[0]
    assert one["low"] < one["speedup"] < one["high"]


def test_limit_and_target_lines_are_neutral_inside_the_axes_and_never_annotated():
    # The old MNIST figure's data: accuracies 95.9..98.4%, so the old y range started at 90.9
    # and left the 90% limit line outside.
    history = [
        {"epoch": i + 1, "elapsed_seconds": 2.5 * (i + 1), "valid_accuracy": a}
        for i, a in enumerate((0.959, 0.966, 0.969, 0.980, 0.983, 0.984))
    ]
    run = load.AccuracyRun("mnist.json", Path("mnist.json"), accuracy_payload(history=history))
    fig = plots.accuracy_curves([run], "mnist")
    (ax,) = fig.axes
    limit = policy.LIMITS["mnist"]
    low, high = ax.get_ylim()
    assert low < 100 * limit.accuracy < high
    left, right = ax.get_xlim()
    assert left < limit.seconds < right
    for target in policy.ACCURACY_TARGETS:
        if target.dataset == "mnist":
            assert low < 100 * target.accuracy < high and left < target.seconds < right
    references = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(references) == 2
    assert {line.get_color() for line in references} == {plots.REFERENCE["color"]}
    assert len(ax.texts) == 0  # nothing written over the data
    fig.draw_without_rendering()
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert not box.overlaps(ax.get_window_extent())  # the legend is outside the axes


def test_each_backend_keeps_one_colour_and_none_is_the_reference_grey(two_machines, tmp_path):
    frame = frame_of(*two_machines)
    throughput = plots.throughput(frame, tables.sgemm_peaks(frame))
    seen: dict[str, set] = {}
    for ax in plots.figure_axes(throughput):
        for container in ax.containers:
            if isinstance(container, BarContainer):
                colour = matplotlib.colors.to_hex(container.patches[0].get_facecolor())
                seen.setdefault(container.get_label(), set()).add(colour)
    assert seen == {b: {plots.color(b)} for b in RECIPE_SPEED}
    scaling = plots.scaling(frame, "Big Xeon 16c")
    lines = [line for line in scaling.axes[0].get_lines() if line.get_linestyle() == "-"]
    assert {line.get_color() for line in lines} == {plots.color("im2col")}
    colours = [plots.color(b) for b in ("im2col", "loop", "fft", "torch", "winograd", "auto")]
    assert len(set(colours)) == len(colours)
    assert plots.REFERENCE["color"] not in colours


def test_log_axes_have_plain_tick_labels_and_compared_panels_share_y(tmp_path):
    records = sweep_records(sizes=(1, 3, 5), fft=(40.0, 45.0, 50.0), im2col=(4.0, 30.0, 90.0))
    for record in list(records):  # a second pass, as the suite has three
        twin = copy.deepcopy(record)
        twin["extra_info"]["pass"] = "grad_inputs"
        twin["name"] = twin["fullname"] = record["name"] + "-gi"
        records.append(twin)
    fig = plots.kernel_sweep(frame_of(write_run(tmp_path / "s.json", records)), [])
    fig.draw_without_rendering()
    left, right = fig.axes
    labels = [t.get_text() for t in left.get_yticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"[0-9.]+", text) for text in labels), labels
    assert left.get_ylim() == right.get_ylim()


def test_the_sgemm_peak_is_a_labelled_reference_line_not_a_ceiling(tmp_path):
    records = recipe_records() + [sgemm_record(median=0.5)]  # a peak below torch's bars
    frame = frame_of(write_run(tmp_path / "run.json", records))
    peaks = tables.sgemm_peaks(frame)
    (peak,) = peaks.values()
    fig = plots.throughput(frame, peaks)
    axes = plots.figure_axes(fig)
    for ax in axes:
        (line,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert line.get_ydata()[0] == pytest.approx(peak.gflops)
        assert line.get_color() == plots.REFERENCE["color"]
        top = max(p.get_height() for p in ax.patches)
        assert ax.get_ylim()[1] > max(top, peak.gflops)  # bars above the line stay visible
    (sub,) = fig.subfigs
    title = sub._suptitle.get_text()
    assert "Haswell kernels" in title and "Small Xeon" in title
    assert any("not a" in t.get_text() for t in fig.legends[0].get_texts())


def test_the_report_says_when_the_code_changed_since_a_run(tmp_path):
    head = provenance.head()
    if head is None or provenance.code_status("HEAD~1").commit is None:
        pytest.skip("not a git checkout with history")
    assert provenance.code_status(head).changed is False
    unknown = provenance.code_status("f" * 40)
    assert unknown.changed is None and "not in this repository" in unknown.text
    assert provenance.code_status(None).changed is None
    old = _changed_commit()
    if old is None:
        pytest.skip("no commit in this history whose package code differs from HEAD")
    status = provenance.code_status(old, dirty=True, note="run from a copy of the tree")
    assert status.changed is True
    assert "code changed since this run" in status.text and old[:7] in status.text
    assert "note recorded with the run: run from a copy of the tree" in status.text.lower()

    run = write_run(
        tmp_path / "old.json", recipe_records(), nnbench=machine(commit=old, note="a note")
    )
    out = tmp_path / "out"
    build([run], out, no_run=True)
    glance = _section((out / "REPORT.md").read_text(encoding="utf-8"), "## At a glance")
    assert "**Code changed since these runs**" in glance
    assert f"`old.json` ({old[:7]} → {head[:7]})" in glance


AVX512 = ["sse2", "avx", "avx2", "fma", "avx512f", "avx512bw"]
AVX2 = ["sse2", "avx", "avx2", "fma"]


@pytest.mark.parametrize(
    ("flags", "arch", "coretype", "expected"),
    [
        pytest.param(
            AVX512, "Haswell", "Haswell",
            "OpenBLAS ran its Haswell kernels (AVX2) on a CPU with AVX-512 "
            "(`OPENBLAS_CORETYPE=Haswell` was set)",
            id="avx512-cpu-haswell-set",
        ),
        pytest.param(
            AVX512, "Zen", None, "OpenBLAS ran its Zen kernels (AVX2) on a CPU with AVX-512",
            id="avx512-cpu-zen-detected",
        ),
        pytest.param(
            AVX2, "Sandybridge", None,
            "OpenBLAS ran its Sandybridge kernels (AVX) on a CPU with AVX2",
            id="avx2-cpu-sandybridge",
        ),
        pytest.param(AVX512, "SkylakeX", None, None, id="avx512-cpu-skylakex"),
        pytest.param(AVX2, "Haswell", "Haswell", None, id="avx2-cpu-haswell"),
        pytest.param(AVX2, "SkylakeX", None, None, id="wider-kernels-than-flags"),
        pytest.param(AVX512, "Neoverse", None, None, id="unknown-kernel-set"),
        pytest.param(None, "Haswell", None, None, id="no-flags-recorded"),
    ],
)  # fmt: skip
def test_narrow_blas_names_kernels_narrower_than_the_cpu(flags, arch, coretype, expected):
    info = machine(arch=arch) | {"cpu": {"flags": flags} if flags is not None else {}}
    info["environment"] = {**info.get("environment", {}), "OPENBLAS_CORETYPE": coretype}
    assert provenance.narrow_blas(info) == expected


def test_the_report_warns_of_blas_kernels_narrower_than_the_cpu(tmp_path):
    """A run whose CPU has AVX-512 and whose OpenBLAS ran Haswell's kernels gets a warning
    naming its machine; a run of the same CPU on SkylakeX's kernels gets none."""
    nnbench = machine(arch="Haswell")
    nnbench["environment"] = {**nnbench.get("environment", {}), "OPENBLAS_CORETYPE": "Haswell"}
    narrow = write_run(
        tmp_path / "narrow.json",
        [sgemm_record(median=0.08), *recipe_records()],
        machine_info={"cpu": {"brand_raw": "x", "count": 2, "flags": AVX512}, "nnbench": nnbench},
    )
    wide = write_run(
        tmp_path / "wide.json",
        [sgemm_record(median=0.04), *recipe_records()],
        machine_info={
            "cpu": {"brand_raw": "x", "count": 2, "flags": AVX512},
            "nnbench": machine(arch="SkylakeX"),
        },
    )
    build([narrow, wide], tmp_path / "out", no_run=True)
    glance = _section(
        (tmp_path / "out" / "REPORT.md").read_text(encoding="utf-8"), "## At a glance"
    )
    warnings = [line for line in glance.splitlines() if "BLAS kernels narrower" in line]
    assert len(warnings) == 1, warnings
    assert "in Small Xeon 2c · Haswell BLAS (every thread count):" in warnings[0]
    assert "SkylakeX BLAS" not in warnings[0]
    assert "(`OPENBLAS_CORETYPE=Haswell` was set)" in warnings[0]
    assert "each column's SGEMM peak is given above" in warnings[0]


def test_cpus_of_one_name_but_another_family_or_model_get_columns_of_their_own(tmp_path):
    """A cloud VM's CPU may say only 'AMD EPYC' on two generations: runs of the same name and
    BLAS kernels merge only where the recorded family and model agree too."""

    def run(name: str, family: int, model: int) -> Path:
        cpu = {"brand_raw": "x", "count": 2, "family": family, "model": model}
        return write_run(
            tmp_path / name, recipe_records(), machine_info={"cpu": cpu, "nnbench": machine()}
        )

    zen3, zen5, zen5_again = run("a.json", 25, 1), run("b.json", 26, 2), run("c.json", 26, 2)
    frame = frame_of(zen3, zen5, zen5_again)
    assert tables.column_order(frame) == [
        "Small Xeon 2c (family 25 model 1) · 2 thr",
        "Small Xeon 2c (family 26 model 2) · 2 thr",
    ]
    newer = frame[frame["column"] == "Small Xeon 2c (family 26 model 2) · 2 thr"]
    assert set(newer["run"]) == {"c.json"}  # b and c merged, the later run's records kept
    assert tables.column_order(frame_of(zen5, zen5_again)) == ["Small Xeon 2c · 2 thr"]


def test_runs_of_changed_code_get_a_column_of_their_own(tmp_path):
    """Two runs of one machine, one of the code at HEAD and one of code changed since: they are
    not merged (nor judged together), and the old one's column names its commit."""
    head, old = provenance.head(), _changed_commit()
    if head is None or old is None:
        pytest.skip("needs a git checkout with a commit whose code differs from HEAD")
    now = write_run(tmp_path / "now.json", recipe_records(), nnbench=machine(commit=head))
    then = write_run(tmp_path / "then.json", recipe_records(), nnbench=machine(commit=old))
    assert tables.column_order(frame_of(now, then)) == [
        "Small Xeon 2c · 2 thr",
        f"Small Xeon 2c · 2 thr · at {old[:7]}",
    ]
    # the headline counts the targets of the code at HEAD; the old column's are said apart
    build([now, then], tmp_path / "out", no_run=True)
    glance = _section(
        (tmp_path / "out" / "REPORT.md").read_text(encoding="utf-8"), "## At a glance"
    )
    assert "judged in each of 1 column(s) of the code at HEAD" in glance
    assert f"changed since (not counted above): Small Xeon 2c · 2 thr · at {old[:7]}: " in glance


def test_the_code_a_run_measured_is_the_package_and_for_benchmarks_the_suite():
    assert provenance.describe_paths(provenance.SUITE_CODE) == (
        "kernels/, nnbench/, tests/benchmarks/ and tests/conftest.py (not nnbench/report/)"
    )
    assert provenance.describe_paths(provenance.VERIFICATION_CODE) == "kernels/ and nnbench/"
    head = provenance.head()
    if head is None:
        pytest.skip("not a git checkout")
    # the last commit that changed the report alone, the suite alone, the package: what each
    # kind of run counts as a change (a rendering change is none)
    seen = {}
    for commit in _git_lines("log", "--format=%H", "-n", "200"):
        touched = _git_lines("diff-tree", "--no-commit-id", "--name-only", "-r", commit)
        if (
            not touched
            or len(_git_lines("rev-list", "--parents", "-n", "1", commit)[0].split()) != 2
        ):
            continue
        kinds = {
            "report" if t.startswith("nnbench/report/")
            else "suite" if t.startswith("tests/benchmarks/")
            else "package" if t.startswith(("kernels/", "nnbench/"))
            else "other"
            for t in touched
        }  # fmt: skip
        if len(kinds) == 1:
            seen.setdefault(kinds.pop(), commit)
    if not {"report", "package"} <= set(seen):
        pytest.skip("no commit in the last 200 changed the report alone and the package alone")
    expected = {  # kind of change -> changed for (accuracy, benchmark, verification)
        "report": (False, False, True),
        "suite": (False, True, False),
        "package": (True, True, True),
    }
    paths = (provenance.PACKAGE_CODE, provenance.SUITE_CODE, provenance.VERIFICATION_CODE)
    for kind, commit in seen.items():
        if kind in expected:
            parent = provenance._resolve(commit + "~1")
            changed = tuple(provenance._differs(parent, commit, p) for p in paths)
            assert changed == expected[kind], kind


def _git_lines(*args: str) -> list[str]:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          check=False)  # fmt: skip
    return done.stdout.splitlines()


def _changed_commit() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "--format=%H", "-n", "20"],
        capture_output=True,
        text=True,
        check=False,
    )
    for commit in done.stdout.split()[1:]:
        if provenance.code_status(commit).changed:
            return commit
    return None


# --- partial inputs ------------------------------------------------------------------------------


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
    assert "minutes" not in _section(text, "## What is missing")  # no duration it did not measure
    assert "No benchmark results" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["REPORT.md"]


def test_step_and_layer_records_render(tmp_path, bench_file):
    """Records only the full suite makes (layer, step) render in their own tables."""
    extra = [
        _record("torch", "layer", "recipe", "fast/conv1", 0.002, kernel=[4, 3, 3, 3], flops=3e6),
        _record("numpy", "step", "step", "mnist", 0.05, flops=None),
    ]
    extra_file = write_run(tmp_path / "0002_extra.json", extra)
    build([bench_file, extra_file], tmp_path / "out", no_run=True)
    text = (tmp_path / "out" / "REPORT.md").read_text(encoding="utf-8")
    steps = _table_rows(_section(text, "### Training steps"), "case")
    assert {r["case"]: r["Small Xeon 2c · 2 thr"] for r in steps} == {
        "cifar10-fast": "500",
        "mnist": "50.0",
    }
    layer = _table_rows(_section(text, "### Conv2D layer, forward + backward"), "case")
    assert layer[0]["Small Xeon 2c · 2 thr"] == "2.00"


def test_a_stale_verification_file_is_a_note_not_an_error(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "verification.json").write_text(
        json.dumps({"schema": "nnbench.verification/1", "checks": [], "cases": []}),
        encoding="utf-8",
    )
    build([tmp_path / "out"], out, no_run=True)
    text = (out / "REPORT.md").read_text(encoding="utf-8")
    assert "not used:" in text and "nnbench.verification/1" in text


# --- bad inputs ------------------------------------------------------------------------------


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
    command = [
        sys.executable,
        "-m",
        "nnbench.report",
        "--results",
        str(bad),
        "--out",
        str(previous_report),
        "--no-run",
    ]
    done = subprocess.run(
        command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120
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


def test_a_replaced_run_still_shows_its_engine_overhead(tmp_path):
    """A newer run of the same configuration replaces an older one, but the older one's engine /
    plain-torch ratio is a sample of the same target: the notes give it."""
    twin = {"seconds": 30.0, "final_test_accuracy": 0.75, "run_ratio": 1.3, "step_rounds": 30}
    for name, (date, ratio) in {"old": ("01-01", 1.16), "new": ("02-01", 1.04)}.items():
        payload = accuracy_payload(dataset="cifar10", kernel="torch", preset="fast",
                                   machine={"date": f"2026-{date}T00:00:00+00:00"},
                                   torch_twin={**twin, "ratio": ratio})  # fmt: skip
        (tmp_path / f"accuracy-{name}.json").write_text(json.dumps(payload), encoding="utf-8")
    inputs = load.collect([tmp_path])
    assert [r.run_id for r in inputs.accuracy_runs] == ["accuracy-new.json"]
    assert any(
        "accuracy-old.json: not shown" in note
        and "engine / plain-torch ratio: 1.16×, medians of 30 interleaved steps" in note
        for note in inputs.notes
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


def test_quick_and_no_run_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--quick", "--no-run"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_folder_gives_its_newest_run(tmp_path):
    older = write_run(tmp_path / "0001_a.json", [sgemm_record()])
    newer = write_run(tmp_path / "0002_b.json", [sgemm_record(median=0.04)])
    os.utime(older, (1_000_000, 1_000_000))
    inputs = load.collect([tmp_path])
    assert [r.path for r in inputs.benchmark_runs] == [newer]
    assert any("1 older JSON file" in note for note in inputs.notes)


# --- accuracy targets from nnbench.policy ------------------------------------------------------


def test_accuracy_targets_come_from_policy_and_use_the_fastest_full_run(tmp_path):
    def run(name, times, smoke=False, kernel="none", dataset="mnist", preset="mnist"):
        history = [
            {"epoch": i + 1, "elapsed_seconds": t, "valid_accuracy": a}
            for i, (t, a) in enumerate(times)
        ]
        data = accuracy_payload(
            history=history,
            smoke=smoke,
            kernel=kernel,
            dataset=dataset,
            preset=preset,
            time_to_accuracy={},
        )
        return load.AccuracyRun(name, tmp_path / name, data)

    runs = [
        run("smoke.json", [(5.0, 0.99)], smoke=True),  # fastest, but a smoke run counts nothing
        run("full.json", [(20.0, 0.97), (40.0, 0.981)]),
        run("slow.json", [(50.0, 0.97), (70.0, 0.981)]),
    ]
    table = tables.target_table(runs)
    assert list(table["target"]) == [t.name for t in policy.ACCURACY_TARGETS]
    row = table[table["target"].str.startswith("MNIST")].iloc[0]
    assert row["best run"] == "full.json" and row["time to threshold (s)"] == 40.0
    assert row["verdict"] == "met" and row["runs"] == 2
    cifar = table[table["target"].str.startswith("CIFAR-10")]
    assert (cifar["verdict"] == "not measured").all()
    # A kernel-scoped target is judged on that kernel's run only, not the fastest one.
    cifar_runs = [
        run("torch.json", [(100.0, 0.71)], kernel="torch", dataset="cifar10", preset="fast"),
        run("im2col.json", [(400.0, 0.71)], kernel="im2col", dataset="cifar10", preset="fast"),
    ]
    table = tables.target_table(cifar_runs)
    scoped = table[table["judged on"] == "the im2col run"].iloc[0]
    assert scoped["best run"] == "im2col.json" and scoped["verdict"] == "MISSED"
    fastest = table[table["target"] == policy.ACCURACY_TARGETS[1].name].iloc[0]
    assert fastest["best run"] == "torch.json" and fastest["verdict"] == "met"


def test_the_twin_ratio_is_labelled_by_how_it_was_measured():
    stepped = accuracy_payload(
        dataset="cifar10",
        kernel="torch",
        preset="fast",
        torch_twin={"seconds": 30.0, "ratio": 1.1, "run_ratio": 1.3, "step_rounds": 30},
    )
    whole = accuracy_payload(
        dataset="cifar10",
        kernel="torch",
        preset="best",
        torch_twin={"seconds": 30.0, "ratio": 1.05},
    )
    table = tables.twin_table(
        [
            load.AccuracyRun("a.json", Path("a.json"), stepped),
            load.AccuracyRun("b.json", Path("b.json"), whole),
        ]
    )
    first, second = table.to_dict("records")
    assert first["measured as"] == "medians of 30 interleaved steps"
    assert first["engine / torch"] == 1.1 and first["whole training, one run each"] == 1.3
    assert second["measured as"] == "whole training, one run each"
    threshold = metrics.overhead_target().threshold
    assert first[f"target ≤ {threshold:g}×"] == policy.judge(1.1, threshold, higher=False)


def test_stamp_shows_the_settings_and_a_late_import():
    machine_ = {
        "environment": {"OPENBLAS_THREAD_TIMEOUT": "16", "OMP_NUM_THREADS": None},
        "thread_settings_missed_by": ["numpy"],
    }
    text = render._settings_text(machine_)
    assert "`OPENBLAS_THREAD_TIMEOUT=16`" in text and "OMP_NUM_THREADS" not in text
    assert "running without them: numpy" in text
    assert render._settings_text({}) == "none recorded"


def test_numbers_are_formatted_without_exponents_above_a_thousandth():
    assert tables.sig(1234.5) == "1,234" and tables.sig(0.01234) == "0.0123"
    assert tables.geomean([1.0, 4.0]) == 2.0 and math.isnan(tables.geomean([]))
    assert np.isclose(tables.geomean([0.5, 2.0, float("nan")]), 1.0)
