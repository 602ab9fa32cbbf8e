#!/usr/bin/env bash
# Every GPU row of docs/benchmarks.md in one go, in under 8 minutes on one H100: run it whenever a GPU is at hand.
#
#   bash benchmarks/gpu.sh [LOG_DIR]        # default LOG_DIR: out/gpu-<date>-<time>
#
# Each step writes its tables to LOG_DIR/<step>.md and its messages to LOG_DIR/<step>.err; LOG_DIR/summary.txt
# says what ran, its exit code and seconds. Every step has a hard time limit (together 7 min 35 s): a step cut
# there is noted (exit 124) and the next one still runs. The sizes are the documented GPU rows, made small where
# the full set would not fit the 8 minutes (model.py's default GPU sizes run to 4M points; these stop at 1M):
#
#   tests             the GPU-marked tests (flash / memory-efficient attention kernels, the ball tree on CUDA tensors)
#   model             MSPT vs dense attention, bf16, 131k-1M points; 10M-point streaming prediction;
#                     MSPT vs the official Transolver at equal size (reads tests/references.py's snapshot)
#   train-throughput  the bf16 training step at 100k and 1M points per sample, with and without torch.compile
#   backbones         the four backbones' train step at 65k-1M points and predict of 1M queries
#   accuracy          a short accuracy run (400 steps, --quick) on ../shared/data/ahmed's held-out bodies
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
LOG=${1:-out/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$LOG"

step() {  # step NAME SECONDS COMMAND...: COMMAND under a time limit, its output in LOG/NAME.md and LOG/NAME.err
    local name=$1 limit=$2 start=$SECONDS code
    shift 2
    echo "== $name (limit ${limit} s): $*" | tee -a "$LOG/summary.txt"
    timeout --kill-after=10 "$limit" "$@" >"$LOG/$name.md" 2>"$LOG/$name.err"
    code=$?
    echo "   exit $code after $((SECONDS - start)) s$([ "$code" = 124 ] && echo ': cut at its limit')" \
        | tee -a "$LOG/summary.txt"
}

if ! "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "no CUDA device visible to $PY: these are the GPU rows, nothing to run here" >&2
    exit 1
fi
{ nvidia-smi; "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    >"$LOG/machine.txt" 2>&1

step tests 45 "$PY" -m pytest -q -m gpu tests
step model 130 "$PY" benchmarks/model.py --device cuda --sizes 131072 524288 1048576 --stream-size 10000000 \
    --full-budget 10 --timeout 60 --repeats 2
step train-throughput 100 "$PY" benchmarks/train_throughput.py --device cuda --points 100000 1000000 --steps 5
step backbones 60 "$PY" benchmarks/backbones.py --device cuda --cost-only --sizes 65536 262144 1048576 --timeout 30
step accuracy 120 "$PY" benchmarks/accuracy.py --device cuda --steps 400 --quick --workers 8 --work "$LOG/accuracy"

echo "all output in $LOG" | tee -a "$LOG/summary.txt"
