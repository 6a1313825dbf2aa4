#!/usr/bin/env bash
# GPU acceptance for the TensorRT backend (needs an NVIDIA GPU, TensorRT and cuda-python; see docs/tensorrt.md).
# Exports D0 (unless ONNX=... is given), builds FP32/FP16/INT8 plans, checks their detections against
# ONNX Runtime FP32 on BCCD images, times them against trtexec on the same ONNX and prints one table.
#   ONNX=model.onnx bash benchmarks/gpu_acceptance.sh          # use an existing export
#   CHECKPOINT=run/model.edrt SPEC=specs/bccd_d0.yaml bash benchmarks/gpu_acceptance.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu_acceptance}
mkdir -p "$OUT"
$PY -c "from effdet_rt.gpu.trt_common import tensorrt_status as s; ok, t = s(); print(t); raise SystemExit(0 if ok else 3)"
if [[ -z "${ONNX:-}" ]]; then
  : "${CHECKPOINT:?set ONNX=model.onnx or CHECKPOINT=model.edrt (and SPEC=spec.yaml)}"
  ONNX="$OUT/d0.onnx"
  .venv/bin/effdet-rt export -e "${SPEC:?set SPEC}" -m "$CHECKPOINT" -o "$ONNX" --nms efficient
fi
exec $PY benchmarks/gpu_acceptance.py --onnx "$ONNX" --out "$OUT" \
  --images "${IMAGES:-../shared/data/bccd/BCCD/JPEGImages}" --tfrecords "${TFRECORDS:-}"
