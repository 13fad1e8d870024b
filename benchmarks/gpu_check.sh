#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine (issue 17 item 5): what cannot be checked on the 2-core CPU box.
#
#   benchmarks/gpu_check.sh [--data-dir DIR] [--quick] [--steps a,b,...]
#
# Steps (each logged to OUT/<step>.log, its exit status and seconds to OUT/summary.tsv; a failing step does
# not stop the others):
#   env        torch/CUDA versions, the GPU, bf16 support
#   train      two short training runs on CUDA with bf16 autocast and channels_last: ResNet-18 (3x3 stem) on
#              Fashion-MNIST and MobileNetV2 on iChallenge-PM at 224 px
#   ddp        the same ResNet-18 run as DDP over every GPU with nccl (torchrun); one line and skipped with 1 GPU
#   benchmark  cnnzoo benchmark --vs torchvision on CUDA (training and inference, interleaved with torchvision)
#   ichallenge the iChallenge-PM table at 224 px: every ichallenge-* row of benchmarks/train_accuracy.py (the
#              course's recipe and cnnzoo's folder recipe on AlexNet, VGG-16, GoogLeNet, ResNet-50), on CUDA
#
# Results go under $OUT when it is set (the device tool's output folder), else runs/gpu-check. The data root
# holds ichallenge-pm/ and fashion-mnist/ (default ../shared/data from the repository root). Nothing is
# downloaded (CNNZOO_OFFLINE=1): the machine may have no network.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
DATA="$ROOT/../shared/data"
QUICK=0
STEPS="env,train,ddp,benchmark,ichallenge"
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir) DATA="$2"; shift 2 ;;
        --data-dir=*) DATA="${1#*=}"; shift ;;
        --quick) QUICK=1; shift ;;  # one epoch per training run, one benchmark net, course rows only
        --steps) STEPS="$2"; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
DATA="$(cd "$DATA" 2>/dev/null && pwd)" || { echo "gpu_check.sh: data folder not found (--data-dir)" >&2; exit 2; }
RESULTS="${OUT:-$ROOT/runs/gpu-check}"
mkdir -p "$RESULTS" || exit 2
PY="${PYTHON:-python3}"
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && PY="$ROOT/.venv/bin/python"
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # works without `pip install -e .` too
export CNNZOO_DATA="$DATA" CNNZOO_OFFLINE=1
SUMMARY="$RESULTS/summary.tsv"
printf 'step\tstatus\tseconds\n' > "$SUMMARY"

want() { [[ ",$STEPS," == *",$1,"* ]]; }

# step NAME TIMEOUT_S CMD...: run CMD with a time limit, its output to the terminal and NAME.log
step() {
    local name="$1" limit="$2" t0 rc
    shift 2
    echo "== $name: $*"
    t0=$(date +%s)
    timeout "$limit" "$@" 2>&1 | tee "$RESULTS/$name.log"
    rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$SUMMARY"
    [ "$rc" -eq 0 ] || echo "== $name: FAILED (exit $rc; see $RESULTS/$name.log)"
    return 0
}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null)
NGPU=${NGPU:-0}
if [ "$NGPU" -lt 1 ]; then
    echo "gpu_check.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False): nothing to check" \
        | tee "$RESULTS/no-gpu.txt"
    exit 0
fi
EPOCHS=2
[ "$QUICK" -eq 1 ] && EPOCHS=1
TRAIN_COMMON=(--amp bf16 --channels-last --device cuda --overwrite --no-progress --format json)

if want env; then
    step env 120 "$PY" -c "
import torch, torchvision
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'cuda:{i}', p.name, f'{p.total_memory / 2**30:.0f} GiB', 'sm', f'{p.major}.{p.minor}')
print('bf16 supported:', torch.cuda.is_bf16_supported(), '| nccl:', torch.distributed.is_nccl_available())
"
    nvidia-smi > "$RESULTS/nvidia-smi.txt" 2>&1 || true
fi

if want train; then
    step train-resnet18-fmnist 900 "$PY" -m cnnzoo train --model resnet18_cifar --dataset fashion-mnist \
        --epochs "$EPOCHS" "${TRAIN_COMMON[@]}" --out "$RESULTS/runs/resnet18-fmnist"
    step train-mobilenet_v2-ichallenge 900 "$PY" -m cnnzoo train --model mobilenet_v2 \
        --dataset "folder:$DATA/ichallenge-pm" --img-size 224 --epochs "$EPOCHS" "${TRAIN_COMMON[@]}" \
        --out "$RESULTS/runs/mobilenet_v2-ichallenge"
fi

if want ddp; then
    if [ "$NGPU" -gt 1 ]; then
        step ddp-nccl 900 "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m cnnzoo train \
            --model resnet18_cifar --dataset fashion-mnist --epochs "$EPOCHS" "${TRAIN_COMMON[@]}" \
            --out "$RESULTS/runs/resnet18-fmnist-ddp"
    else
        echo "== ddp: skipped: 1 GPU visible; DDP with nccl needs 2 or more (torchrun --nproc_per_node=N)" \
            | tee "$RESULTS/ddp-nccl.log"
        printf 'ddp-nccl\tskipped\t0\n' >> "$SUMMARY"
    fi
fi

if want benchmark; then
    NETS=(resnet50 mobilenet_v2 efficientnet_b0 vgg16 googlenet)
    [ "$QUICK" -eq 1 ] && NETS=(resnet50)
    step benchmark-vs-torchvision 1200 "$PY" -m cnnzoo benchmark "${NETS[@]}" --device cuda --vs torchvision \
        --mode both --batch-size 64 --format json
fi

if want ichallenge; then
    # the rows as benchmarks/train_accuracy.py defines them (one definition), with the data root given here
    # and --device cuda; train_accuracy.py skips rows whose options `cnnzoo train` does not have yet
    ROWS_PREFIX="ichallenge-"
    [ "$QUICK" -eq 1 ] && ROWS_PREFIX="ichallenge-course-only"
    step ichallenge-table 3600 "$PY" - "$DATA" "$RESULTS/ichallenge" "$ROWS_PREFIX" <<'PYEOF'
import runpy
import sys

data, out, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
ns = runpy.run_path("benchmarks/train_accuracy.py")
rows = [r for r in ns["ROWS"] if r.startswith("ichallenge-")]
if prefix == "ichallenge-course-only":
    rows = [r for r in rows if not r.startswith("ichallenge-folder-")]
for r in rows:
    target, args = ns["ROWS"][r]
    args = [a.replace("folder:../shared/data/ichallenge-pm", f"folder:{data}/ichallenge-pm") for a in args]
    ns["ROWS"][r] = (target, [*args, "--device", "cuda"])
sys.argv = ["train_accuracy.py", "--rows", ",".join(rows), "--out", out, "--force"]
sys.exit(ns["main"]())
PYEOF
fi

echo
echo "== summary ($SUMMARY)"
column -t -s $'\t' "$SUMMARY" 2>/dev/null || cat "$SUMMARY"
