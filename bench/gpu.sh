#!/usr/bin/env bash
# Full-size throughput and memory benchmarks on one CUDA GPU, an estimated 5-6 minutes on an H200 (each step
# has its own time limit, 7.5 minutes in all, so one stuck step cannot take the others' time).
#   bash bench/gpu.sh                        # NAME.json (the JSON line), NAME.log to $OUT, else bench/results/
#   PYTHON=/opt/venv/bin/python bash bench/gpu.sh
# Steps:
#   train_throughput       full KoBART (124M): baseline / plain HF in float32, dialsum in bf16 + fused AdamW
#   generation_throughput  full KoBART, random weights, 96 dev dialogues, 4 and 12 beams
#   vocab_memory           mT5 vocabulary (250,112) at mT5-base width and depth (768, 12 layers), the seed's
#                          batch 32 x 1024 -> 200 (that script has no bf16 switch: float32 there)
# Exit status: 0 when every step wrote its JSON, 1 when one failed, 2 when Python cannot use CUDA.
# Untested: written without access to a GPU.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
dest="${OUT:-bench/results}"
mkdir -p "$dest"
if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
  py=.venv/bin/python
else
  py=python3
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

probe='import torch, transformers, dialsum
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))'
if ! "$py" -c "$probe" > "$dest/environment.txt" 2>&1; then
  cat "$dest/environment.txt"
  echo "gpu.sh: $py cannot run the benchmarks on CUDA (see above); set PYTHON=..." >&2
  exit 2
fi
cat "$dest/environment.txt"

failed=0

# bench NAME SECONDS SCRIPT ARGS...: full output to NAME.log, its last line (the JSON) to NAME.json.
bench() {
  local name=$1 limit=$2 started=$SECONDS status=0
  shift 2
  echo "== $name (limit ${limit}s): $*"
  timeout "$limit" "$py" "$@" > "$dest/$name.log" 2>&1 || status=$?
  if [[ $status -eq 0 ]]; then
    tail -n 1 "$dest/$name.log" > "$dest/$name.json"
    grep -v -e '^{' -e '^round ' -e '^beams ' "$dest/$name.log" | tail -n 8
  else
    echo "$name FAILED (exit $status; 124 = time limit); last lines:"
    tail -n 20 "$dest/$name.log"
    failed=1
  fi
  echo "   $name took $((SECONDS - started))s"
}

bench train_throughput 120 bench/train_throughput.py --device cuda --size full --steps 8 --rounds 9
bench generation_throughput 210 bench/generation_throughput.py --device cuda --size full --n 96 \
  --beams 4 12 --rounds 3
bench vocab_memory 120 bench/vocab_memory.py --device cuda --d-model 768 --layers 12 --batch 32 \
  --src-len 1024 --tgt-len 200 --chunk-tokens 1024

exit "$failed"
