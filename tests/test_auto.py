"""``backend="auto"`` (nnbench.auto): measured choice of the fastest verified backend."""

from __future__ import annotations

import importlib
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kernels
from nnbench import Conv2D, auto
from nnbench.machine import pinned_threads
from nnbench.verify import ConvCase, compare, operands

ROOT = Path(__file__).resolve().parents[1]
CASE = ConvCase((4, 3, 9, 9), (5, 3, 3, 3), 1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Each test plans from scratch, with its own cache file."""
    monkeypatch.setenv(auto.CACHE_ENV, str(tmp_path / "plans.json"))
    auto.forget()
    with pinned_threads(1):
        yield tmp_path / "plans.json"
    auto.forget()


@pytest.mark.parametrize("pass_", ["forward", "grad_inputs", "grad_kernels"])
def test_auto_computes_the_convolution_with_a_verified_backend(pass_, monkeypatch):
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    ops = operands(CASE)
    call = {"forward": kernels.convolve, "grad_inputs": kernels.grad_inputs,
            "grad_kernels": kernels.grad_kernels}[pass_]  # fmt: skip
    for _ in range(auto.TRIAL_CALLS * len(kernels.available())):  # the trial, if there is one
        call(*ops.arguments(pass_), CASE.padding, backend="auto")
    assert auto.pending() == []
    result = call(*ops.arguments(pass_), CASE.padding, backend="auto")
    chosen = auto.plan(pass_, CASE.input_shape, CASE.kernel_shape, CASE.padding)
    assert chosen.backend in kernels.available() and chosen.source == "measured"
    assert chosen.seconds[chosen.backend] is not None and chosen.backend in chosen.finalists
    compare(pass_, result, ops.reference(pass_), dtype="float32", backend=chosen.backend,
            reduction=CASE.reduction_length(pass_)).check()  # fmt: skip


def test_a_choice_is_reused_and_persisted(private_cache):
    first = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1) is first
    assert first.settled == (len(first.finalists) == 1) and first.trial is None
    saved = json.loads(private_cache.read_text())
    assert saved["schema"] == auto.SCHEMA and saved["plans"][first.key]["backend"] == first.backend
    auto.forget()  # a new process, in effect
    again = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert again.source == "cache" and again.backend == first.backend


@pytest.mark.parametrize(
    "content, reason",
    [
        ("{not json", "not a valid cache"),
        ('{"schema": "other/9"}', "not a valid cache"),
        ('{"schema": "nnbench.auto/1", "plans": {}}', "the way schema 'nnbench.auto/1' says"),
        ("[1, 2]", "not a valid cache"),
    ],
    ids=["corrupt", "foreign-schema", "older-schema", "not-an-object"],
)
def test_an_unusable_cache_is_ignored_with_a_warning(private_cache, content, reason):
    private_cache.write_text(content)
    with pytest.warns(RuntimeWarning, match=reason):
        chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.source == "measured"


def test_a_cache_from_another_machine_is_not_trusted(private_cache):
    auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    saved = json.loads(private_cache.read_text())
    key = next(iter(saved["plans"]))
    saved["machine"]["cpu_model"] = "some other CPU"
    saved["plans"][key]["backend"] = "loop"
    private_cache.write_text(json.dumps(saved))
    auto.forget()
    with pytest.warns(RuntimeWarning, match="another machine"):
        chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.source == "measured"


def _add_backend(tmp_path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"backend_{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    found, _ = kernels._registry.discover()
    monkeypatch.setattr(kernels, "_BACKENDS", found)


def test_a_slow_correct_backend_is_timed_and_not_chosen(tmp_path, monkeypatch):
    _add_backend(
        tmp_path,
        monkeypatch,
        "sleepy",
        """
        import time
        from kernels.backend_im2col import convolve as fast
        def convolve(inputs, kernels, padding):
            time.sleep(0.05)
            return fast(inputs, kernels, padding)
    """,
    )
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.backend != "sleepy" and "sleepy" not in chosen.failed
    assert "sleepy" in chosen.seconds  # a candidate: verified, then timed or given up on
    sys.modules.pop("kernels.backend_sleepy", None)


def test_a_plan_on_trial_settles_on_the_finalist_faster_in_use(
    tmp_path, monkeypatch, private_cache
):
    """The race chose "sluggish"; in use, "quick" is faster. The calls alternate between them
    (each result used, and right) until both have TRIAL_CALLS and TRIAL_SECONDS have passed."""
    for name, pause in [("quick", 0.0), ("sluggish", 0.004)]:
        _add_backend(tmp_path, monkeypatch, name, f"""
            import time
            from kernels.backend_im2col import convolve as right
            CALLS = []
            def convolve(inputs, kernels, padding):
                CALLS.append(1)
                time.sleep({pause})
                return right(inputs, kernels, padding)
        """)  # fmt: skip
    monkeypatch.setattr(auto, "TRIAL_CALLS", 3)
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 60.0)
    key = auto.key_for("forward", CASE.input_shape, CASE.kernel_shape, 1, "float32")
    raced = auto.Plan(key, "sluggish", {"quick": 0.01, "sluggish": 0.009},
                      finalists=("quick", "sluggish"), settled=False)  # fmt: skip
    auto._plans[key] = raced
    ops = operands(CASE)
    for _ in range(8):
        result = kernels.convolve(*ops.arguments("forward"), 1, backend="auto")
        compare("forward", result, ops.reference("forward"), dtype="float32", backend="im2col",
                reduction=CASE.reduction_length("forward")).check()  # fmt: skip
    calls = {name: len(sys.modules[f"kernels.backend_{name}"].CALLS) for name in raced.finalists}
    assert calls == {"quick": 4, "sluggish": 4}  # in turns; not settled before TRIAL_SECONDS
    assert auto.pending() == [key] and auto.plan("forward", CASE.input_shape,
                                                 CASE.kernel_shape, 1) is raced  # fmt: skip
    monkeypatch.setattr(auto, "TRIAL_SECONDS", 0.0)
    for _ in range(2):  # the turn's two calls; the second settles
        kernels.convolve(*ops.arguments("forward"), 1, backend="auto")
    settled = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert settled.settled and settled.backend == "quick" and auto.pending() == []
    assert settled.trial["quick"] < 0.004 <= settled.trial["sluggish"]
    assert settled.seconds == raced.seconds  # the race's times are kept beside the trial's
    saved = json.loads(private_cache.read_text())["plans"][key]
    assert saved["backend"] == "quick" and saved["settled"] and saved["trial"] == settled.trial
    before = len(sys.modules["kernels.backend_quick"].CALLS)
    kernels.convolve(*ops.arguments("forward"), 1, backend="auto")
    assert len(sys.modules["kernels.backend_quick"].CALLS) == before + 1
    for name in raced.finalists:
        sys.modules.pop(f"kernels.backend_{name}", None)


def test_a_backend_wrong_only_on_large_batches_is_caught_on_the_exact_shapes(tmp_path, monkeypatch):
    """The small check case has a batch of 2; this backend is right there and wrong beyond."""
    _add_backend(
        tmp_path,
        monkeypatch,
        "bigwrong",
        """
        from kernels.backend_im2col import convolve as right
        def convolve(inputs, kernels, padding):
            result = right(inputs, kernels, padding)
            result[2:] = 0
            return result
    """,
    )
    big = ConvCase((4, 3, 9, 9), (5, 3, 3, 3), 1)
    chosen = auto.plan("forward", big.input_shape, big.kernel_shape, 1)
    assert "bigwrong" in chosen.failed and chosen.backend != "bigwrong"
    sys.modules.pop("kernels.backend_bigwrong", None)


def test_the_cache_is_reused_by_a_new_process(private_cache):
    probe = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("error")
        import nnbench
        from nnbench import auto
        from nnbench.machine import pinned_threads
        with pinned_threads(1):
            print(auto.plan("forward", {CASE.input_shape}, {CASE.kernel_shape}, 1).source)
    """)
    env = {**os.environ, auto.CACHE_ENV: str(private_cache)}
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           cwd=ROOT, env=env, check=True).stdout.split() for _ in range(2)]  # fmt: skip
    assert runs == [["measured"], ["cache"]]


@pytest.fixture
def wrong_fast_backend(tmp_path, monkeypatch):
    """A backend that answers at once, and wrongly (zeros): found like any backend file."""
    (tmp_path / "backend_fastwrong.py").write_text(
        textwrap.dedent("""
        import numpy as np
        def convolve(inputs, kernels, padding):
            n, _, h, w = inputs.shape
            c, _, kh, kw = kernels.shape
            return np.zeros((n, c, h - kh + 1 + 2 * padding, w - kw + 1 + 2 * padding),
                            inputs.dtype)
    """)
    )
    importlib.invalidate_caches()
    monkeypatch.setattr(kernels, "__path__", [*kernels.__path__, str(tmp_path)])
    found, _ = kernels._registry.discover()
    monkeypatch.setattr(kernels, "_BACKENDS", found)
    yield
    sys.modules.pop("kernels.backend_fastwrong", None)


def test_auto_never_picks_a_backend_that_fails_verification(wrong_fast_backend):
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert "fastwrong" in chosen.failed and "FAILED" in chosen.failed["fastwrong"]
    assert chosen.backend != "fastwrong" and "fastwrong" not in chosen.seconds


def test_a_cached_choice_that_now_fails_is_planned_again(private_cache, wrong_fast_backend):
    key = auto.key_for("forward", CASE.input_shape, CASE.kernel_shape, 1, "float32")
    auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    saved = json.loads(private_cache.read_text())
    saved["plans"][key]["backend"] = "fastwrong"
    private_cache.write_text(json.dumps(saved))
    auto.forget()
    chosen = auto.plan("forward", CASE.input_shape, CASE.kernel_shape, 1)
    assert chosen.backend != "fastwrong" and chosen.source == "measured"


def test_conv2d_and_environment_variable_accept_auto(monkeypatch, rng):
    layer = Conv2D(4, 3, input_shape=(3, 8, 8), kernel="auto")
    layer.build(None)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert layer.forward(x).shape == (2, 4, 8, 8) and layer.backend.name == "auto"
    monkeypatch.setenv(kernels.ENV_VAR, "auto")
    assert kernels.resolve(None) is auto.BACKEND


def test_auto_needs_nnbench():
    probe = "import kernels\ntry:\n    kernels.get('auto')\nexcept ValueError as e:\n    print(e)"
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert "provided by nnbench.auto" in run.stdout


def test_candidates_are_raced_and_the_finalists_timed_again(monkeypatch):
    """A scripted clock: ``time_call`` returns each call's next scripted time, so the race is
    decided by the script, not by the machine."""
    from nnbench import bench
    from nnbench.bench import runner

    order = []
    script = {
        "slow": iter([1.0]),  # over GIVE_UP_FACTOR x the fastest first call: given up
        "far": iter([0.003] + [0.0028] * 100),  # under it, but over CLOSE_FACTOR x: not a finalist
        "a": iter([0.002] * (1 + auto.REPEATS) + [0.0011] * 100),  # faster in the later rounds
        "b": iter([0.002] * (1 + auto.REPEATS) + [0.0019] * 100),
    }
    for module in (bench, runner):
        monkeypatch.setattr(module, "time_call", lambda fn: fn())

    def call(name):
        def run():
            order.append(name)
            return next(script[name])

        return run

    calls = {name: call(name) for name in script}
    seconds, finalists = auto._race(calls)
    assert seconds["slow"] is None and finalists == ["a", "b"]
    assert order[:4] == ["slow", "far", "a", "b"]  # the first call of each screens
    rounds = order[4 : 4 + 3 * auto.REPEATS]
    assert all(sorted(rounds[i : i + 3]) == ["a", "b", "far"] for i in range(0, len(rounds), 3))
    again = order[4 + 3 * auto.REPEATS :]
    per_round = 0.002 + 0.002  # the finalists' medians after the first REPEATS rounds
    expected = min(auto.MAX_REPEATS - auto.REPEATS, math.ceil(auto.TIMING_SECONDS / per_round))
    assert again.count("a") == again.count("b") == max(auto.REPEATS, expected)
    assert "far" not in again and seconds["far"] == pytest.approx(0.0028)
    # the finalists' medians pool both phases: a's later rounds are faster, and a now wins
    assert seconds["a"] == pytest.approx(0.0011) and seconds["b"] == pytest.approx(0.0019)
    order.clear()  # one candidate: its first call and REPEATS rounds, no more
    assert auto.time_candidates({"b": call("b")}) == {"b": pytest.approx(0.0019)}
    assert order == ["b"] * (1 + auto.REPEATS)
