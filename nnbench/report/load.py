"""Find and read the result files a report is made from, refusing anything it cannot vouch for.

Two kinds of file are read:

* pytest-benchmark runs (``pytest --benchmark-only --benchmark-autosave`` saves them as
  ``.benchmarks/<machine-id>/NNNN_*.json``; ``--benchmark-json PATH`` writes one anywhere):
  a dict with a ``benchmarks`` list whose entries carry ``stats`` (seconds) and the
  ``extra_info`` of the nnbench suite (backend, pass, suite, label, flops, ...).
* accuracy runs written by ``python -m nnbench.accuracy`` (``accuracy-*.json``, schema
  ``nnbench.accuracy/1``). Each run has its own file; of several runs of one configuration
  (dataset, kernel, preset, seed, smoke or not) the report uses the newest.

A file that is not valid JSON, or is JSON of some other kind, raises ``ResultFileError`` whose
message starts with the file's path: the report never guesses around a bad input.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

ACCURACY_SCHEMAS = ("nnbench.accuracy/1",)
#: The datasets an accuracy result may be about (the report has a section for each).
ACCURACY_DATASETS = ("mnist", "cifar10")
VERIFICATION_SCHEMA = "nnbench.verification/2"
#: Key the report adds to the pytest-benchmark JSON of a quick run it made: how it was run, how
#: long it took and pytest's exit code (so a later ``--no-run`` can say so from the data).
QUICK_KEY = "nnbench_quick"
ACCURACY_GLOB = "accuracy-*.json"
#: Files the report keeps beside REPORT.md: the quick benchmark run and the verification.
QUICK_NAME = "quick-benchmark.json"
VERIFICATION_NAME = "verification.json"
#: Where pytest-benchmark saves runs by default, and where nnbench.accuracy writes its results.
DEFAULT_BENCHMARK_STORAGE = Path(".benchmarks")
DEFAULT_RESULTS_DIR = Path("reports") / "results"


class ReportError(Exception):
    """Something the report cannot work around; the message says what and where."""


class ResultFileError(ReportError, ValueError):
    """A result file that cannot be read, is not valid JSON, or is not a known kind of result."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class StaleResultError(ResultFileError):
    """A result the report itself wrote in an older schema: noted and left out, not fatal when
    found in a folder."""


@dataclass
class BenchmarkRun:
    """One pytest-benchmark run: where it came from and its entries (``benchmarks`` list)."""

    run_id: str  # the file name, or the name the quick run is saved under
    path: Path | None
    datetime: str | None
    machine: dict
    commit: dict
    records: list[dict]
    quick: dict | None = None  # the QUICK_KEY entry of a quick run the report made

    @property
    def old_schema(self) -> bool:
        """Records without verdicts: written by the code before the verification core."""
        return bool(self.records) and not any("verdict" in r["extra_info"] for r in self.records)


@dataclass
class AccuracyRun:
    """One ``nnbench.accuracy`` result file."""

    run_id: str
    path: Path
    data: dict

    @property
    def dataset(self) -> str:
        return str(self.data["dataset"])

    @property
    def kernel(self) -> str:
        return str(self.data["kernel"])

    @property
    def smoke(self) -> bool:
        return bool(self.data.get("smoke", False))

    @property
    def datetime(self) -> str | None:
        machine = self.data.get("machine") or {}
        return machine.get("date") if isinstance(machine, dict) else None

    @property
    def configuration(self) -> tuple:
        """What a rerun repeats: runs with the same configuration replace each other."""
        data = self.data
        return (
            self.dataset,
            self.kernel,
            str(data.get("preset")),
            str(data.get("seed")),
            self.smoke,
        )


@dataclass
class Inputs:
    """Everything found, plus notes on what was looked for and not found."""

    benchmark_runs: list[BenchmarkRun] = field(default_factory=list)
    accuracy_runs: list[AccuracyRun] = field(default_factory=list)
    verification: dict | None = None  # a stored verification payload, with "loaded_from"
    searched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# --- reading ------------------------------------------------------------------------------


def read_json(path: str | os.PathLike) -> object:
    """The parsed JSON of ``path``; ``ResultFileError`` naming the file if that fails."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ResultFileError(path, f"not UTF-8 text, so not a JSON result ({exc})") from exc
    except OSError as exc:
        raise ResultFileError(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(
            path,
            f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "the file is corrupted or truncated: delete it or produce it again",
        ) from exc


def load_file(path: str | os.PathLike) -> BenchmarkRun | AccuracyRun | dict:
    """Read ``path`` and return the run it holds, whichever kind it is (a stored verification
    comes back as its payload dict, with ``loaded_from`` added)."""
    path = Path(path)
    payload = read_json(path)
    if isinstance(payload, dict) and "benchmarks" in payload:
        return benchmark_run(payload, path=path)
    if isinstance(payload, dict) and str(payload.get("schema", "")).startswith(
        VERIFICATION_SCHEMA.split("/")[0]
    ):
        return verification(payload, path)
    if isinstance(payload, dict) and "schema" in payload:
        return accuracy_run(payload, path)
    raise ResultFileError(
        path,
        "not a result this report reads: expected a pytest-benchmark run (a JSON object with a "
        "'benchmarks' list) or an nnbench accuracy result (a JSON object with "
        f'"schema": {ACCURACY_SCHEMAS[0]!r}); got '
        + (
            f"an object with keys {sorted(payload)[:8]}"
            if isinstance(payload, dict)
            else f"a JSON {type(payload).__name__}"
        ),
    )


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def benchmark_run(
    payload: dict, *, path: Path | None = None, run_id: str | None = None
) -> BenchmarkRun:
    """Validate a pytest-benchmark payload into a ``BenchmarkRun``."""
    where = path if path is not None else Path(run_id or "<benchmark run>")
    entries = payload.get("benchmarks")
    if not isinstance(entries, list):
        raise ResultFileError(where, "'benchmarks' is not a list: not a pytest-benchmark run")
    for i, entry in enumerate(entries):
        problem = _benchmark_entry_problem(entry)
        if problem:
            name = entry.get("fullname") or entry.get("name") if isinstance(entry, dict) else None
            raise ResultFileError(
                where,
                f"benchmarks[{i}] ({name or 'unnamed'}) {problem}; this report reads runs of the "
                "nnbench suite (tests/benchmarks), whose entries carry extra_info with backend, "
                "pass, suite, label and flops",
            )
    machine = _machine(payload.get("machine_info"))
    commit = payload.get("commit_info")
    return BenchmarkRun(
        run_id=run_id or (path.name if path is not None else "benchmark run"),
        path=path,
        datetime=payload.get("datetime") if isinstance(payload.get("datetime"), str) else None,
        machine=machine,
        commit=commit if isinstance(commit, dict) else {},
        records=list(entries),
        quick=payload.get(QUICK_KEY) if isinstance(payload.get(QUICK_KEY), dict) else None,
    )


def _machine(info: object) -> dict:
    """pytest-benchmark's machine_info with nnbench's ``machine_info()`` (which the suite's
    conftest adds under ``"nnbench"``) lifted to the top; CPU and cores from py-cpuinfo when
    nnbench's are absent."""
    if not isinstance(info, dict):
        return {}
    merged = dict(info)
    nnbench = info.get("nnbench")
    if isinstance(nnbench, dict):
        merged.update(nnbench)
        if isinstance(nnbench.get("threads_in_benchmarks"), dict):
            merged["threads"] = nnbench["threads_in_benchmarks"]
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    merged.setdefault("cpu_model", cpu.get("brand_raw") or info.get("processor") or "unknown")
    merged.setdefault("cores", cpu.get("count", "?"))
    return merged


def _benchmark_entry_problem(entry: object) -> str | None:
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    stats = entry.get("stats")
    if not isinstance(stats, dict):
        return "has no 'stats'"
    for key in ("median", "min"):
        if not _number(stats.get(key)) or stats[key] <= 0:
            return f"has no valid stats.{key} (seconds > 0), got {stats.get(key)!r}"
    extra = entry.get("extra_info")
    if not isinstance(extra, dict):
        return "has no 'extra_info'"
    for key in ("pass", "suite", "label"):
        if not isinstance(extra.get(key), str):
            return f"has no extra_info.{key!r} string, got {extra.get(key)!r}"
    if extra["pass"] != "sgemm" and not isinstance(extra.get("backend"), str):
        return f"has no extra_info.'backend' string, got {extra.get('backend')!r}"
    flops = extra.get("flops")
    if flops is not None and (not _number(flops) or flops < 0):
        return f"has an invalid extra_info.flops {flops!r}"
    return None


def accuracy_run(payload: dict, path: Path) -> AccuracyRun:
    """Validate an ``nnbench.accuracy`` payload into an ``AccuracyRun``."""
    schema = payload.get("schema")
    if schema not in ACCURACY_SCHEMAS:
        raise ResultFileError(
            path,
            f"unsupported schema {schema!r}; this report reads {', '.join(ACCURACY_SCHEMAS)}",
        )
    for key in ("dataset", "kernel"):
        if not isinstance(payload.get(key), str):
            raise ResultFileError(path, f"{key!r} must be a string, got {payload.get(key)!r}")
    if payload["dataset"] not in ACCURACY_DATASETS:
        raise ResultFileError(
            path,
            f"unknown dataset {payload['dataset']!r}; this report shows "
            f"{', '.join(ACCURACY_DATASETS)}",
        )
    _check_accuracy(path, "final_test_accuracy", payload.get("final_test_accuracy"))
    _check_history(path, "history", payload.get("history"))
    tta = payload.get("time_to_accuracy", {})
    if not isinstance(tta, dict) or not all(
        _is_fraction(k) and (v is None or _number(v)) for k, v in tta.items()
    ):
        raise ResultFileError(
            path, "'time_to_accuracy' must map accuracy strings like '0.7' to seconds or null"
        )
    twin = payload.get("torch_twin")
    if twin is not None:
        if not (isinstance(twin, dict) and _number(twin.get("seconds"))):
            raise ResultFileError(path, "'torch_twin' must be null or an object with 'seconds'")
        if "final_test_accuracy" in twin:
            _check_accuracy(path, "torch_twin.final_test_accuracy", twin["final_test_accuracy"])
        if "history" in twin:
            _check_history(path, "torch_twin.history", twin["history"])
    return AccuracyRun(run_id=path.name, path=path, data=payload)


def _check_accuracy(path: Path, key: str, value: object) -> None:
    """An accuracy is a fraction in [0, 1] (0.75, not 75 or 750)."""
    if not _number(value):
        raise ResultFileError(path, f"{key!r} must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ResultFileError(
            path, f"{key!r} is {value!r}, but an accuracy is a fraction in [0, 1]"
        )


def _check_history(path: Path, key: str, history: object) -> None:
    if not isinstance(history, list):
        raise ResultFileError(path, f"{key!r} must be a list of per-epoch records")
    for i, epoch in enumerate(history):
        if not isinstance(epoch, dict) or not all(
            _number(epoch.get(k)) for k in ("elapsed_seconds", "valid_accuracy")
        ):
            raise ResultFileError(
                path, f"{key}[{i}] needs numeric 'elapsed_seconds' and 'valid_accuracy'"
            )
        _check_accuracy(path, f"{key}[{i}].valid_accuracy", epoch["valid_accuracy"])


def verification(payload: dict, path: Path) -> dict:
    """Validate a stored verification (written by the report beside REPORT.md)."""
    if payload.get("schema") != VERIFICATION_SCHEMA:
        raise StaleResultError(
            path,
            f"a verification of schema {payload.get('schema')!r}, not {VERIFICATION_SCHEMA!r}: "
            "an older report's, without bounds; run `python -m nnbench.report` without "
            "--no-run to compute it again",
        )
    checks = payload.get("checks")
    if not isinstance(checks, list) or not isinstance(payload.get("cases"), list):
        raise ResultFileError(path, "a verification record needs 'checks' and 'cases' lists")
    for i, check in enumerate(checks):
        ok = (
            isinstance(check, dict)
            and all(isinstance(check.get(k), str) for k in ("backend", "pass", "dtype"))
            and isinstance(check.get("passed"), bool)
            and all(isinstance(check.get(k), int) for k in ("checked", "failed"))
            and all(isinstance(check.get(k), list) for k in ("failures", "skipped"))
        )
        if not ok:
            raise ResultFileError(path, f"checks[{i}] is not a verification check")
    return {**payload, "loaded_from": str(path)}


def _is_fraction(text: object) -> bool:
    try:
        return 0.0 < float(text) <= 1.0  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


# --- finding ------------------------------------------------------------------------------


def _newest(paths: list[Path]) -> Path | None:
    """The most recently written of ``paths`` (ties broken by name: NNNN_ prefixes count up)."""
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def collect(
    paths: list[str | os.PathLike] | None = None,
    *,
    benchmark_storage: str | os.PathLike = DEFAULT_BENCHMARK_STORAGE,
    results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR,
) -> Inputs:
    """Load the runs named by ``paths`` (files or directories), or the defaults.

    A file is read whatever its name. A directory contributes every ``accuracy-*.json`` below
    it and its newest other ``*.json`` (the latest benchmark run; older ones are listed in the
    notes, pass a file to use one). Defaults: ``benchmark_storage`` and ``results_dir``.
    Explicitly named paths that do not exist are an error; missing defaults are not. Of the
    accuracy runs found, only the newest of each configuration is kept.
    """
    inputs = Inputs()
    explicit = paths is not None and len(paths) > 0
    targets = [Path(p) for p in paths] if explicit else [Path(benchmark_storage), Path(results_dir)]
    for target in targets:
        inputs.searched.append(str(target))
        if target.is_file():
            _add(inputs, load_file(target))
        elif target.is_dir():
            # The default results folder may hold other JSON of the project's: read only the
            # accuracy results there. The storage folder holds only benchmark runs.
            _collect_dir(
                inputs,
                target,
                accuracy=explicit or target == Path(results_dir),
                benchmarks=explicit or target == Path(benchmark_storage),
            )
        elif explicit:
            raise ResultFileError(target, "no such file or directory")
    inputs.benchmark_runs.sort(key=lambda r: (r.datetime or "", r.run_id))
    _keep_newest_accuracy_runs(inputs)
    inputs.accuracy_runs.sort(key=lambda r: (r.dataset, r.kernel, r.datetime or "", r.run_id))
    return inputs


def _keep_newest_accuracy_runs(inputs: Inputs) -> None:
    """Of several accuracy runs of one configuration keep the newest (by the date it started,
    then by when the file was written); the notes name the others."""
    newest: dict[tuple, AccuracyRun] = {}
    runs = sorted(
        inputs.accuracy_runs, key=lambda r: (r.datetime or "", r.path.stat().st_mtime, r.run_id)
    )
    for run in runs:
        older = newest.get(run.configuration)
        if older is not None:
            inputs.notes.append(
                f"{older.path}: not shown, {run.path.name} is a newer run of the same configuration"
                + _twin_ratio(older)
            )
        newest[run.configuration] = run
    inputs.accuracy_runs = list(newest.values())


def _twin_ratio(run: AccuracyRun) -> str:
    """What a run that is not shown measured of the engine's overhead, for the notes: a ratio
    that a newer run replaces is still a sample of it."""
    twin = run.data.get("torch_twin") or {}
    ratio = twin.get("ratio")
    if not isinstance(ratio, (int, float)):
        return ""
    return f" (its engine / plain-torch ratio: {ratio:.2f}×, {twin_measured_as(twin)})"


def twin_measured_as(twin: dict) -> str:
    """How an accuracy run's engine / plain-torch ``ratio`` was measured: newer runs time
    interleaved training steps (``step_rounds``), older ones whole trainings, one of each."""
    rounds = twin.get("step_rounds")
    if isinstance(rounds, int):
        return f"medians of {rounds} interleaved steps"
    return "whole training, one run each"


def _collect_dir(inputs: Inputs, directory: Path, *, accuracy: bool, benchmarks: bool) -> None:
    accuracy_files = sorted(directory.rglob(ACCURACY_GLOB))
    verifications = sorted(directory.rglob(VERIFICATION_NAME))
    others = [
        p
        for p in directory.rglob("*.json")
        if p not in set(accuracy_files) | set(verifications) and not p.name.startswith(".")
    ]
    for path in accuracy_files if accuracy else ():
        _add(inputs, load_file(path))
    if benchmarks and verifications:
        newest_verification = _newest(verifications)
        try:
            _add(inputs, load_file(newest_verification))
        except StaleResultError as exc:  # an older report's verification: not an input error
            inputs.notes.append(f"not used: {exc}")
    newest = _newest(others) if benchmarks else None
    if newest is not None:
        _add(inputs, load_file(newest))
        older = len(others) - 1
        if older:
            inputs.notes.append(
                f"{directory}: used the newest run {newest.name}; {older} older JSON file(s) "
                "there were not read (name a file with --results to use it)"
            )


def _add(inputs: Inputs, run: BenchmarkRun | AccuracyRun | dict) -> None:
    if isinstance(run, dict):
        inputs.verification = run
    elif isinstance(run, BenchmarkRun):
        if not any(r.path == run.path for r in inputs.benchmark_runs):
            inputs.benchmark_runs.append(run)
    elif not any(r.path == run.path for r in inputs.accuracy_runs):
        inputs.accuracy_runs.append(run)
