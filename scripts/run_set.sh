#!/usr/bin/env bash
# The benchmark and accuracy runs behind reports/REPORT.md, one after another.
#
#   scripts/run_set.sh PREFIX [full|benchmarks|cores] [pytest options]
#
# Each benchmark run writes a new file PREFIX-<run>-<UTC start>.json under
# $RUNS_DIR/benchmarks (RUNS_DIR defaults to reports; a relative one is taken from the
# repository root), never replacing one. PREFIX names the machine and its cores ("amd2",
# "xeon16"), so that `python -m nnbench.report --results reports/benchmarks/PREFIX-*.json ...`
# can pick that machine's runs. The accuracy runs write their own files under $RUNS_DIR/results
# (accuracy-<dataset>-<kernel>[-<preset>]-seed<N>-<UTC start>.json), each stamped with the
# machine it ran on.
#
#   full        a machine's column of the committed report (about 80 minutes on 2 cores): the
#               suite, then second and third samples of the recipe layers, scaling and engine
#               overhead, two more of the overhead with more rounds, of the training steps and
#               of auto; then `tox -e accuracy`'s runs (MNIST, CIFAR-10 with every kernel and
#               the plain-torch twin), CIFAR-10 with auto, and the best preset once more
#   benchmarks  the same without the accuracy runs (about 35 minutes on 2 cores)
#   cores       for a machine with many cores and little time (a few minutes on 16 cores):
#               recipe layers, scaling and engine overhead at a short budget, then overhead
#               alone with more rounds
#
# Run it on an otherwise idle machine: every figure is a median of rounds that the machine's
# other work disturbs. Options after the mode go to every pytest call (--bench-threads 8).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${1:?usage: scripts/run_set.sh PREFIX [full|benchmarks|cores] [pytest options]}
mode=${2:-full}
shift $(($# < 2 ? $# : 2))
case $mode in full | benchmarks | cores) ;; *)
    echo "mode must be full, benchmarks or cores, got '$mode'" >&2
    exit 2
    ;;
esac
case $prefix in "" | *[!A-Za-z0-9_.-]* | [-.]*)
    echo "PREFIX may hold letters, digits, '.', '_' and '-' (neither of the last three first), got '$prefix'" >&2
    exit 2
    ;;
esac
runs=${RUNS_DIR:-reports}
mkdir -p "$runs/benchmarks" "$runs/results"

bench() { # bench NAME PYTEST-ARGS...: one pytest-benchmark run saved as PREFIX-NAME-<time>.json
    local name=$1
    shift
    local file
    file="$runs/benchmarks/$prefix-$name-$(date -u +%Y%m%dT%H%M%SZ).json"
    while [ -e "$file" ]; do # a run that ended within the second: a name of its own
        sleep 1
        file="$runs/benchmarks/$prefix-$name-$(date -u +%Y%m%dT%H%M%SZ).json"
    done
    echo "== $(date -u +%H:%M:%S) $file" >&2
    pytest tests/benchmarks --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$file" "$@"
}

targets="recipe or scaling or overhead"
if [ "$mode" = cores ]; then
    bench recipe-scaling -k "$targets" --bench-budget 0.3 "$@"
    bench overhead -k overhead --bench-budget 3 "$@"
    exit 0
fi

bench suite --bench-budget 0.5 "$@"
for _ in 1 2; do bench rerun -k "$targets" --bench-budget 0.5 "$@"; done
for _ in 1 2; do bench overhead -k overhead --bench-budget 6 "$@"; done
for _ in 1 2; do bench steps -k train_step --bench-budget 4 "$@"; done
for _ in 1 2; do bench auto -k auto --bench-budget 0.5 "$@"; done
if [ "$mode" = benchmarks ]; then
    exit 0
fi

accuracy() { python -m nnbench.accuracy --quiet --out "$runs/results" "$@"; }
echo "== $(date -u +%H:%M:%S) accuracy runs" >&2
accuracy --dataset all --kernel all --compare-torch
accuracy --dataset cifar10 --kernel auto
for _ in 1 2; do accuracy --dataset cifar10 --kernel torch --preset best; done
