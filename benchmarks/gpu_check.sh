#!/usr/bin/env bash
# One GPU session's checks, in one go (a lent GPU machine has torch but not Hydra: carry
# hydra/omegaconf/antlr4 as plain folders in .gpu/site). Writes logs under ${OUT:-/tmp/gpu_out}.
#   1. convbench train on CUDA (bf16 + channels_last), resnet20 on CIFAR-10-format data,
#      stopped by SIGTERM mid-run, resumed, then evaluated;
#   2. benchmarks/throughput.py: resnet18 on CIFAR-10-shaped data, bf16 + channels_last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda}; PER_BATCH=${PER_BATCH:-2000}  # DEVICE=cpu PER_BATCH=200: a dry run
VAL_SIZE=$(( PER_BATCH < 1000 ? PER_BATCH : 1000 ))  # fewer than the 5 x PER_BATCH training images
export PYTHONPATH="$PWD/src:$PWD/.gpu/site:$PWD/tests" PYTHONUNBUFFERED=1
nvidia-smi -L || true; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
work=$(mktemp -d)
python3 -c "
from pathlib import Path; from helpers.fakedata import write_cifar_dataset
write_cifar_dataset(Path('$work/cifar'), per_batch=$PER_BATCH, test=1000)"
run="$work/run"
python3 -m convbench train model=resnet dataset=cifar10 "dataset.root=$work/cifar" \
  dataset.val_size=$VAL_SIZE trainer.device=$DEVICE trainer.precision=bf16 trainer.channels_last=true trainer.epochs=4 \
  trainer.checkpoint_every_n_steps=10 "hydra.run.dir=$run" > "$OUT/train.log" 2>&1 &
pid=$!
for _ in $(seq 600); do [ -f "$run/checkpoints/last.pt" ] && break; sleep 0.1; done
sleep 1; kill -TERM $pid; wait $pid; echo "train exit code after SIGTERM: $? (3 expected)"
tail -3 "$OUT/train.log"
python3 -m convbench resume "$run" > "$OUT/resume.log" 2>&1; echo "resume exit code: $?"
tail -3 "$OUT/resume.log"
python3 -m convbench eval "$run" --device $DEVICE | tail -4
[ "$DEVICE" = cuda ] && python3 benchmarks/throughput.py --device cuda --precision bf16 --channels-last \
  --models resnet18 --dataset cifar10 --images 50000 --json "$OUT/throughput_resnet18.json" \
  2>&1 | tee "$OUT/throughput_resnet18.txt"
[ "$DEVICE" = cuda ] && python3 benchmarks/throughput.py --device cuda --images 50000 \
  --json "$OUT/throughput_small.json" 2>&1 | tee "$OUT/throughput_small.txt"
exit 0
