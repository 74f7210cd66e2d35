#!/usr/bin/env bash
# The one script that proves the GPU paths and measures them, on one CUDA GPU, in under 8 minutes: each step
# has its own time limit (7 min 50 s in all), so one stuck step cannot take the others' time.
#   bash bench/gpu.sh                        # NAME.json (the JSON line), NAME.log to $OUT, else bench/results/
#   bash bench/gpu.sh --dry-run              # every step on the CPU at tiny sizes: checks the plumbing
#   PYTHON=/opt/venv/bin/python bash bench/gpu.sh
# Steps:
#   train_throughput       full KoBART (124M): baseline in float32, plain HF (random order and its own
#                          group_by_length) and dialsum, both in bf16 with fused AdamW
#   generation_throughput  full KoBART trained from random weights on the sample (once, 2 epochs), 64 dev
#                          dialogues, 4 beams: fixed batches vs sorted vs dropping finished inputs
#   vocab_memory           mT5 vocabulary (250,112) at mT5-base width and depth (768, 12 layers), the seed's
#                          batch 32 x 1024 -> 200 (that script has no bf16 switch: float32 there)
#   causal_qlora           1.1B Llama-shaped model in 4-bit NF4 with LoRA r16 (the EXAONE recipe): plain HF
#                          vs dialsum, tokens per second and step memory
#   nccl_train             train under torchrun with one rank on NCCL: dialsum's own collectives beside it
#   suite_gpu              dialsum suite --gpus 0, two tiny experiments: NVML memory rows, the smart wait
#   qlora_steps            4-bit mT5 and a Llama-shaped LM through dialsum train: paged 8-bit AdamW, bf16
#                          compute, liger-kernel where installed
#   memory_check           the seven shipped configs at full width (SOLAR at 12 of its 48 layers), measured
#                          peak beside dialsum validate's estimate
# Exit status: 0 when every step wrote its JSON, 1 when one failed, 2 when Python cannot use CUDA.
# Only the --dry-run has run so far (no GPU was available): the CUDA paths and the time limits are untested.
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

dry_run=false
[[ "${1:-}" == "--dry-run" ]] && dry_run=true
if $dry_run; then
  probe='import torch, transformers, dialsum
print("dry run on the CPU: torch", torch.__version__, "transformers", transformers.__version__)'
else
  probe='import torch, transformers, dialsum
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name(0))'
fi
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

if $dry_run; then
  bench train_throughput 120 bench/train_throughput.py --rows 256 --epochs 1 --rounds 2
  bench generation_throughput 150 bench/generation_throughput.py --size smoke --n 16 --beams 4 --rounds 1
  bench vocab_memory 120 bench/vocab_memory.py --quick
  bench causal_qlora 120 bench/causal_qlora.py --quick
  bench nccl_train 120 bench/gpu_paths.py nccl
  bench suite_gpu 180 bench/gpu_paths.py suite
  bench qlora_steps 180 bench/gpu_paths.py qlora
  bench memory_check 180 bench/memory_check.py --quick --layers 05_solar_10.7b_qlora=1
else
  bench train_throughput 45 bench/train_throughput.py --device cuda --size full --epochs 1 --rounds 3
  bench generation_throughput 120 bench/generation_throughput.py --device cuda --size full --n 64 --beams 4 \
    --rounds 2
  bench vocab_memory 40 bench/vocab_memory.py --device cuda --d-model 768 --layers 12 --batch 32 \
    --src-len 1024 --tgt-len 200 --chunk-tokens 1024
  bench causal_qlora 65 bench/causal_qlora.py --device cuda --size 1b --steps 3 --rounds 3
  bench nccl_train 35 bench/gpu_paths.py nccl --device cuda
  bench suite_gpu 55 bench/gpu_paths.py suite --device cuda
  bench qlora_steps 45 bench/gpu_paths.py qlora --device cuda
  bench memory_check 65 bench/memory_check.py --device cuda --steps 2 --layers 05_solar_10.7b_qlora=12
fi

exit "$failed"
