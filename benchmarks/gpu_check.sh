#!/bin/bash
# The CUDA checks, on the lent GPU machine (no package registry there; ../shared/LIBRARIES.md):
# install from the carried wheels (.whl/: cattrs, typing_extensions), then the CUDA tests and the
# speed benchmarks on the GPU. Writes speed.txt, engine.txt, sample.txt and cuda_tests.txt into
# $OUT. PARTS picks what runs (default: all four, in that order: the targets first). The default
# time limits (220 + 180 + 40 + 130 s, plus ~20 s of installing) fit one device call of 600 s: a
# session has 15 minutes of device time in all, the machine's start included (a start took
# about 30 s on 2026-11-26).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT" /tmp/site
python3 -m pip install --quiet --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site MPLBACKEND=Agg PYTHONUNBUFFERED=1
# The fused CPU kernels are not used on a GPU: do not spend device time compiling them.
export LFADS_FUSED_CPU=0
for p in . plugins/lfads_spikes lfads_calcium lfads_emg plugins/lfads_multisession; do
  python3 -m pip install --quiet --no-deps --no-build-isolation -e "$p" >/dev/null 2>&1 || echo "install of $p failed"
done
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
python3 -c "import triton; print('triton', triton.__version__)" || echo "no triton: train.compile falls back"
PARTS=${PARTS:-speed,engine,sample,tests}
if [[ $PARTS == *speed* ]]; then
  timeout "${BENCH_TIMEOUT:-220}" python3 benchmarks/train_speed.py --device cuda --epochs "${EPOCHS:-4}" \
    --modes "${MODES:-eager,graphs,compiled}" >"$OUT/speed.txt" 2>&1
  tail -30 "$OUT/speed.txt"
fi
if [[ $PARTS == *engine* ]]; then
  timeout "${ENGINE_TIMEOUT:-180}" python3 benchmarks/pbt_engine.py --device cuda --sizes "${SIZES:-1,8,32,64,128}" --trials-members 2 >"$OUT/engine.txt" 2>&1
  tail -20 "$OUT/engine.txt"
fi
if [[ $PARTS == *sample* ]]; then
  timeout "${SAMPLE_TIMEOUT:-40}" python3 benchmarks/sample_speed.py --device cuda --rows "${ROWS:-auto,16384,32768,65536}" --ab-pageable --profile >"$OUT/sample.txt" 2>&1
  grep -v "^USDT" "$OUT/sample.txt" | head -40
fi
if [[ $PARTS == *tests* ]]; then
  timeout "${TEST_TIMEOUT:-130}" python3 -m pytest -q -p no:cacheprovider -rfEs --durations=8 tests/test_cuda.py >"$OUT/cuda_tests.txt" 2>&1
  tail -60 "$OUT/cuda_tests.txt"
fi
