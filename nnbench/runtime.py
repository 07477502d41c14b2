"""The one explicit runtime configuration: what the CLIs and the benchmark suite tune, and why.

Importing nnbench changes nothing outside nnbench: no environment variable, no allocator
setting, no thread. ``configure()`` is the one call that does, made by ``python -m
nnbench.accuracy`` and by the benchmark suite (``pytest --benchmark-only``, so also the
report's quick set); ``settings()`` says what it did, and every result records that
(``nnbench.machine.machine_info``).

Why: numpy's OpenBLAS, torch's OpenMP workers and nnbench's own pool (``kernels.threads``) take
turns on the same cores, and by default the idle ones keep spinning after each call (OpenBLAS
for about 0.1 s, libgomp for up to 300000 polls), holding the cores the next one needs.

* OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` when it starts its threads. ``configure`` makes
  every loaded OpenBLAS re-read its environment with that variable set (``openblas_read_env``)
  and restart its threads (``blas_thread_shutdown_``, the path OpenBLAS itself takes around a
  fork), then puts the environment back: idle OpenBLAS threads sleep after about 2**16 cycles,
  whatever the order in which numpy was loaded. nnbench's own compute mostly runs the BLAS on
  one thread anyway (``kernels.threads``); this matters for the GEMMs it leaves to the BLAS's
  threads (im2col's forward GEMM).
* libgomp reads ``GOMP_SPINCOUNT`` once, when it is loaded, and offers no way to change it
  afterwards. ``configure`` sets it (to 10000 polls, unless the user set it) while torch is not
  loaded yet, and records whether it was in time. The CLIs call ``configure`` before they load
  torch. Where the spin was not tuned (torch imported first, or no ``configure`` at all), the
  torch backend ends libgomp's workers after each call instead
  (``kernels.threads.release_openmp``), so the engine's speed does not depend on the order in
  which torch and nnbench were imported.
* the glibc allocator (``nnbench.machine.tune_allocator``): freed multi-megabyte buffers stay on
  the heap instead of going back to the OS, so a training step does not page-fault its
  activations in again on every step.

These are process-wide and not undone; ``configure`` is idempotent.
"""

from __future__ import annotations

import os
import sys
import threading

#: Spin of an idle OpenBLAS thread, as log2 of CPU cycles (16: about 25 microseconds).
OPENBLAS_THREAD_TIMEOUT = "16"
#: Polls an idle libgomp thread spins before it sleeps.
GOMP_SPINCOUNT = "10000"

_SETTINGS: dict[str, object] = {"configured": False}
_LOCK = threading.Lock()


def settings() -> dict[str, object]:
    """What ``configure`` applied in this process (``{"configured": False}`` if it was not)."""
    with _LOCK:
        return dict(_SETTINGS)


def configure() -> dict[str, object]:
    """Apply the runtime tuning of the module docstring (once); return ``settings()``."""
    from nnbench import machine

    with _LOCK:
        if not _SETTINGS["configured"]:
            _SETTINGS["allocator"] = (
                "glibc: mmap and trim thresholds raised"
                if machine.tune_allocator()
                else "not tuned (not glibc)"
            )
            _SETTINGS["openblas_thread_timeout"] = _retime_openblas()
            _SETTINGS["gomp_spincount"] = _set_gomp_spincount()
            _SETTINGS["configured"] = True
        return dict(_SETTINGS)


def _retime_openblas() -> str:
    """Have every loaded OpenBLAS restart its threads with OPENBLAS_THREAD_TIMEOUT set.

    Restarting stops OpenBLAS's threads: a thread in the middle of a BLAS call would wait for
    them forever. So this is done only while no other Python thread runs (at start-up, as the
    CLIs call it), and never for an OpenBLAS built on OpenMP (its threads are libgomp's).
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return "not applied: threadpoolctl is missing"
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()
              and not t.name.startswith("kernels-")]  # fmt: skip
    if others or _pool_busy():
        return f"not applied: other threads were running ({', '.join(others) or 'kernels pool'})"
    value = os.environ.get("OPENBLAS_THREAD_TIMEOUT") or OPENBLAS_THREAD_TIMEOUT
    done, skipped = [], []
    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        read_env = getattr(lib.dynlib, "openblas_read_env", None)
        shutdown = getattr(lib.dynlib, "blas_thread_shutdown_", None)
        name = os.path.basename(lib.filepath)
        if read_env is None or shutdown is None or lib.threading_layer != "pthreads":
            skipped.append(name)
            continue
        previous = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = value
        try:
            read_env()
        finally:  # the environment is left as it was
            if previous is None:
                del os.environ["OPENBLAS_THREAD_TIMEOUT"]
            else:
                os.environ["OPENBLAS_THREAD_TIMEOUT"] = previous
        shutdown()  # threads restart on the next threaded call, with the new timeout
        done.append(name)
    text = f"{value} for {', '.join(done)}" if done else "no OpenBLAS with pthreads loaded"
    return text + (f"; not applicable to {', '.join(skipped)}" if skipped else "")


def _pool_busy() -> bool:
    from kernels import threads

    return threads._POOL.busy.locked()


def _set_gomp_spincount() -> str:
    if "GOMP_SPINCOUNT" in os.environ:
        return f"{os.environ['GOMP_SPINCOUNT']} (set by the user)"
    if "torch" in sys.modules:
        return "default: torch was loaded before configure()"
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return f"{GOMP_SPINCOUNT} (set before torch was loaded)"
