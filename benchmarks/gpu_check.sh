#!/usr/bin/env bash
# One short, prepared round of GPU checks and timings (about 5 minutes on one GPU):
#   DIGITSUM_DATA=../shared/data benchmarks/gpu_check.sh
# Checks that `auto` picks CUDA and that every [train] switch is used there (no "ignored"
# note), then times the compute floor against digitsum's pipeline per switch and batch size.
set -euo pipefail
cd "$(dirname "$0")/.."
export DIGITSUM_DATA=${DIGITSUM_DATA:-../shared/data}
PY=${PY:-.venv/bin/python}  # PY=python3 where digitsum is installed in the system Python
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA here'; print(torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported())"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
i=0
for switch in "train.precision='fp32'" "train.precision='bf16'" "train.channels_last=true" "train.compile=true"; do
  i=$((i + 1))
  echo "== digitsum run, 1 epoch, $switch"
  $PY -m digitsum run recipes/original.toml --set train.epochs=1 --set "$switch" --out "$tmp/run$i" > "$tmp/out$i" 2>&1 || { cat "$tmp/out$i"; exit 1; }
  grep -E "cuda|note:|test:" "$tmp/out$i"
  if grep -q "note:.*ignored" "$tmp/out$i"; then echo "FAIL: $switch was ignored on CUDA"; exit 1; fi
done
for switch in "train.precision='fp32'" "train.precision='bf16'" "train.channels_last=true" "train.compile=true"; do
  echo "== compute floor vs pipeline, $switch"
  $PY benchmarks/compute_floor.py --no-notebook --batch-sizes 128,512,2048 --set "$switch"
done
echo "== epoch speed against the notebook at batch size 32"
$PY benchmarks/epoch_speed.py --samples 20000
