"""Where a number comes from: the machine, the thread count, the BLAS kernels and the code.

* ``machine_label`` / ``blas_kernels`` name a run's machine and the BLAS kernel set its GEMMs
  used (threadpoolctl's ``architecture``, e.g. Haswell or SkylakeX);
* ``Column`` is one column of the side-by-side tables: a machine at one thread count, and for
  runs of code changed since (or of the old record schema, no verdicts) the commit they
  measured;
* ``code_status`` compares the commit a run recorded with the checkout's HEAD over the code
  that run measured (``git diff --quiet <commit> HEAD -- <paths>``: ``PACKAGE_CODE``,
  ``SUITE_CODE`` or ``VERIFICATION_CODE``): whether it has changed since.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

from nnbench import machine

#: The checkout this package lives in (the code a report describes).
REPO = machine.CHECKOUT
#: The code an accuracy run measured: the backends and the package, but not the report
#: (``nnbench/report/`` renders results; an accuracy run does not import it).
PACKAGE_CODE = ("kernels/", "nnbench/", ":(exclude)nnbench/report/")
#: The code a benchmark run measured: the package and the suite, whose harness
#: (``tests/benchmarks/`` and the options of ``tests/conftest.py``) decides what is timed, how
#: and beside what.
SUITE_CODE = (*PACKAGE_CODE, "tests/benchmarks/", "tests/conftest.py")
#: The code a verification record measured: the whole package, as ``nnbench/report/verify.py``
#: computes the record.
VERIFICATION_CODE = ("kernels/", "nnbench/")


def describe_paths(paths: tuple[str, ...]) -> str:
    """``("kernels/", "nnbench/", ":(exclude)nnbench/report/")`` -> 'kernels/ and nnbench/
    (not nnbench/report/)'."""
    kept = [p for p in paths if not p.startswith(":(exclude)")]
    left_out = [p.removeprefix(":(exclude)") for p in paths if p.startswith(":(exclude)")]
    text = ", ".join(kept[:-1]) + (" and " if len(kept) > 1 else "") + kept[-1]
    return text + (f" (not {', '.join(left_out)})" if left_out else "")


def short_cpu(model: object) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'Intel Xeon'; 'AMD EPYC 7B13' stays as it is."""
    text = str(model or "unknown CPU")
    text = re.sub(r"\((R|TM|tm|r)\)", "", text)
    text = re.sub(r"\b(Processor|CPU)\b", "", text)
    text = re.sub(r"@.*$", "", text)
    return " ".join(text.split()) or "unknown CPU"


def machine_label(machine: dict) -> str:
    """'Intel Xeon, 16 cores'."""
    return f"{short_cpu(machine.get('cpu_model'))}, {machine.get('cores', '?')} cores"


def cpu_identity(machine: dict) -> str:
    """'family 26 model 2' (py-cpuinfo's, which pytest-benchmark records), '' where not
    recorded. A cloud VM's CPU often says only 'AMD EPYC': two generations of it (one with
    AVX-512, one without) are told apart by this."""
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    family, model = cpu.get("family"), cpu.get("model")
    if family is None or model is None:
        return ""
    return f"family {family} model {model}"


def blas_architectures(machine: dict) -> tuple[str, ...]:
    threads = machine.get("threads") if isinstance(machine.get("threads"), dict) else {}
    pools = threads.get("blas") or []
    return tuple(sorted({str(p.get("architecture")) for p in pools if p.get("architecture")}))


def blas_kernels(machine: dict) -> str:
    """'OpenBLAS 0.3.30 (Haswell kernels)': the libraries numpy's BLAS calls went to."""
    threads = machine.get("threads") if isinstance(machine.get("threads"), dict) else {}
    pools = threads.get("blas") or []
    if not pools:
        return "an unrecorded BLAS"
    names = sorted(
        {f"{_library(p.get('library'))} {p.get('version') or ''}".strip() for p in pools}
    )
    arch = blas_architectures(machine)
    return ", ".join(names) + (f" ({'/'.join(arch)} kernels)" if arch else "")


#: The widest vector instructions each of OpenBLAS's kernel sets uses (threadpoolctl's
#: ``architecture``, lower case). A set not named here is not judged.
OPENBLAS_ISA = {
    "sapphirerapids": "AVX-512",
    "cooperlake": "AVX-512",
    "skylakex": "AVX-512",
    "haswell": "AVX2",
    "zen": "AVX2",
    "sandybridge": "AVX",
    "bulldozer": "AVX",
    "piledriver": "AVX",
    "steamroller": "AVX",
    "excavator": "AVX",
}
#: Vector instruction sets, widest first, each with the CPU flag that says a CPU has it.
ISA_FLAGS = (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"))


def cpu_isa(machine: dict) -> str | None:
    """The widest of ``ISA_FLAGS`` that a run's CPU has (py-cpuinfo's flags, which
    pytest-benchmark records); None where its flags were not recorded or it has none."""
    cpu = machine.get("cpu") if isinstance(machine.get("cpu"), dict) else {}
    flags = cpu.get("flags")
    if not isinstance(flags, list):
        return None
    present = {str(flag).lower() for flag in flags}
    return next((isa for isa, flag in ISA_FLAGS if flag in present), None)


def narrow_blas(machine: dict) -> str | None:
    """Where numpy's OpenBLAS ran a kernel set for narrower vector instructions than the CPU
    has: 'OpenBLAS ran its Haswell kernels (AVX2) on a CPU with AVX-512
    (`OPENBLAS_CORETYPE=Haswell` was set)'; None where it did not, or it cannot be told."""
    isa = cpu_isa(machine)
    if isa is None:
        return None
    order = [name for name, _ in ISA_FLAGS]
    narrow = [
        (arch, OPENBLAS_ISA[arch.lower()])
        for arch in blas_architectures(machine)
        if arch.lower() in OPENBLAS_ISA
        and order.index(OPENBLAS_ISA[arch.lower()]) > order.index(isa)
    ]
    if not narrow:
        return None
    kernels = " and ".join(f"{arch} kernels ({used})" for arch, used in narrow)
    text = f"OpenBLAS ran its {kernels} on a CPU with {isa}"
    environment = machine.get("environment")
    coretype = environment.get("OPENBLAS_CORETYPE") if isinstance(environment, dict) else None
    return text + (f" (`OPENBLAS_CORETYPE={coretype}` was set)" if coretype else "")


def _library(name: object) -> str:
    return {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(str(name), str(name))


def run_threads(machine: dict) -> int | None:
    """The thread count a run's benchmarks ran at (BLAS threads in force, else torch's)."""
    threads = machine.get("threads") if isinstance(machine.get("threads"), dict) else {}
    counts = [p.get("threads") for p in threads.get("blas") or [] if p.get("threads")]
    if counts:
        return int(max(counts))
    torch = threads.get("torch_threads")
    return int(torch) if isinstance(torch, int) else None


@dataclass(frozen=True)
class Column:
    """One column of the side-by-side tables: a machine (its CPU, with family and model, and
    its BLAS kernels) at a thread count. Runs of old code (code changed since, or records
    without verdicts: the code before the verification core) also carry their commit, so they
    never merge with runs of the code at HEAD."""

    machine: str
    threads: int | None
    blas: tuple[str, ...] = ()
    old_commit: str | None = None  # records without verdicts, of this commit
    changed_commit: str | None = None  # records of this commit, whose code differs at HEAD
    cpu: str = ""  # ``cpu_identity``: CPUs of one name but another generation never merge

    def label(
        self, with_blas: bool = False, with_threads: bool = True, with_cpu: bool = False
    ) -> str:
        text = self.machine.replace(" cores", "c").replace(",", "")
        if with_cpu and self.cpu:
            text += f" ({self.cpu})"
        if with_threads:
            text += " · " + ("? thr" if self.threads is None else f"{self.threads} thr")
        if with_blas and self.blas:
            text += f" · {'/'.join(self.blas)} BLAS"
        if self.old_commit is not None:
            text += f" · old code {short_commit(self.old_commit)}"
        elif self.changed_commit is not None:
            text += f" · at {short_commit(self.changed_commit)}"
        return text

    @property
    def sort_key(self) -> tuple:
        cores = re.search(r"(\d+) cores", self.machine)
        return (
            self.old_commit is not None or self.changed_commit is not None,
            int(cores.group(1)) if cores else 0,
            self.machine,
            self.threads or 0,
            self.cpu,
            self.blas,
            self.old_commit or "",
            self.changed_commit or "",
        )


def column_labels(columns, with_threads: bool = True) -> dict[Column, str]:
    """A unique label per column, in column order; the BLAS kernels are named where the machine
    alone does not tell two columns apart, and the CPU's family and model where that does not
    either."""
    columns = sorted(set(columns), key=lambda c: c.sort_key)
    alike: dict[str, list[Column]] = {}  # columns of one plain label differ in BLAS or CPU
    for column in columns:
        alike.setdefault(column.label(with_threads=with_threads), []).append(column)
    labels = {}
    for same in alike.values():
        with_blas = len({c.blas for c in same}) > 1
        for column in same:
            rivals = [c for c in same if c.blas == column.blas or not with_blas]
            labels[column] = column.label(
                with_blas=with_blas,
                with_threads=with_threads,
                with_cpu=len({c.cpu for c in rivals}) > 1,
            )
    return {column: labels[column] for column in columns}


# --- the code a run measured -----------------------------------------------------------------


def short_commit(commit: object) -> str:
    """A git hash cut to 7 digits; anything else as it is."""
    text = str(commit or "")
    is_hash = len(text) >= 7 and all(ch in "0123456789abcdef" for ch in text.lower())
    return text[:7] if is_hash else text


def _git(*args: str) -> str | None:
    return machine.git(*args, root=REPO)


@functools.lru_cache(maxsize=1)
def head() -> str | None:
    """The checkout's HEAD commit (None outside a git checkout)."""
    return _git("rev-parse", "HEAD")


@functools.lru_cache(maxsize=64)
def _resolve(commit: str) -> str | None:
    return _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")


@functools.lru_cache(maxsize=64)
def _differs(commit: str, current: str, paths: tuple[str, ...]) -> bool | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "diff", "--quiet", commit, current, "--", *paths],
            check=False,
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return {0: False, 1: True}.get(done.returncode)


@dataclass(frozen=True)
class CodeStatus:
    """What a run's recorded commit says about the code it measured, compared with HEAD.

    ``changed``: True (the code the run measured, ``paths``, differs between the run's commit
    and HEAD), False (the same), None (cannot tell: no commit recorded, a commit this checkout
    does not have, or no git here)."""

    commit: str | None
    dirty: bool | None
    note: str | None
    head: str | None
    changed: bool | None
    reason: str = ""
    paths: tuple[str, ...] = PACKAGE_CODE

    @property
    def text(self) -> str:
        """One sentence for the report."""
        at = short_commit(self.commit) + (" (uncommitted changes)" if self.dirty else "")
        if self.changed is True:
            text = (
                f"code changed since this run: measured {at}; what it measured, "
                f"{describe_paths(self.paths)}, differs at HEAD {short_commit(self.head)}"
            )
        elif self.changed is False:
            text = f"measured {at}; the code is unchanged at HEAD {short_commit(self.head)}"
            if self.dirty:
                text += ", but the run had uncommitted changes"
        else:
            text = f"cannot tell whether the code changed since this run: {self.reason}"
        if self.note:
            text += f". Note recorded with the run: {self.note}"
        return text


def code_status(
    commit: object, dirty: object = None, note: object = None, paths: tuple = PACKAGE_CODE
) -> CodeStatus:
    """Compare a run's recorded ``commit`` with HEAD over ``paths``, the code the run measured
    (``PACKAGE_CODE``; ``SUITE_CODE`` for a benchmark run, ``VERIFICATION_CODE`` for a
    verification record): see ``CodeStatus``."""
    commit = str(commit) if commit else None
    dirty = dirty if isinstance(dirty, bool) else None
    note = str(note) if note else None
    paths = tuple(paths)
    current = head()
    if commit is None:
        return CodeStatus(None, dirty, note, current, None, "the run recorded no commit", paths)
    if current is None:
        return CodeStatus(commit, dirty, note, None, None, "this is not a git checkout", paths)
    resolved = _resolve(commit)
    if resolved is None:
        reason = f"its commit {short_commit(commit)} is not in this repository"
        return CodeStatus(commit, dirty, note, current, None, reason, paths)
    changed = _differs(resolved, current, paths)
    reason = "" if changed is not None else "git diff failed"
    return CodeStatus(commit, dirty, note, current, changed, reason, paths)


def recorded_source(machine: dict, commit_info: dict | None = None) -> tuple:
    """(commit, dirty, note) a result recorded: nnbench's ``source`` (the package's own
    checkout), else pytest-benchmark's ``commit_info``. Where the source commit is not in this
    repository but pytest-benchmark's is, the latter is used."""
    source = machine.get("source") if isinstance(machine.get("source"), dict) else {}
    info = commit_info or {}
    note = source.get("note")
    candidates = [
        (source.get("commit"), source.get("dirty")),
        (info.get("id"), info.get("dirty")),
    ]
    candidates = [(c, d) for c, d in candidates if c]
    if not candidates:
        return None, None, note
    for commit, dirty in candidates:
        if head() is not None and _resolve(str(commit)) is not None:
            return commit, dirty, note
    return candidates[0][0], candidates[0][1], note
