#!/usr/bin/env bash
# GPU speed check for issue 5: vit_b at 1024 (the reference setup) on a 512x512 synthetic image.
#
# On the development machine, from the project root, first fetch the wheels the GPU machine lacks:
#   bash ../shared/device/prepare-wheels.sh numba llvmlite   # -> .whl/ (git-ignored)
# then run this script there in one device call, carrying .whl:
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
# It writes bench_*.json, the console tables and nvidia-smi into $OUT (default benchmarks/out).
# tensorrt stays in the runtime list: without torch-tensorrt on that machine it is reported unavailable.
set -uo pipefail
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl
export PYTHONPATH=$PWD/.site:$PWD:$PWD/plugins
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip_install.log" 2>&1 \
  || echo "editable install failed (see pip_install.log); entry points may be missing" >&2
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
bench() {  # name, seconds, args...
  local name=$1 limit=$2
  shift 2
  timeout "$limit" python3 -m vista2d_core bench benchmarks/vit_b_1024.toml --output "$OUT/bench_$name.json" "$@" \
    2>"$OUT/bench_$name.err" | tee "$OUT/bench_$name.txt"
}
# Model computation at batch 1 and 8, end to end with the reference's sliding-window batch of 1.
bench main 360 --runtimes eager,eager:tf32,amp:float16,amp:bfloat16,compile,tensorrt:fp16 \
  --batch-sizes 1,8 --repeats 20 --warmup 3
# End to end with 8 windows per network call (postprocessing on the GPU either way).
bench sw8 150 --runtimes eager,amp:float16,amp:bfloat16 --batch-sizes 8 --repeats 10 --warmup 2 \
  --set infer.sw_batch_size=8
# Cellpose dynamics on the GPU: cellpose's compute_masks / masks_to_flows_gpu vs cellpose_fast / the batched flows.
timeout 240 python3 benchmarks/dynamics.py --device cuda --sizes 1024 2048 --repeats 3 \
  --json "$OUT/dynamics_cuda.json" 2>"$OUT/dynamics_cuda.err" | tee "$OUT/dynamics_cuda.txt"
# Cellpose-SAM side by side (issue 12): cellpose's eval vs recipes/cellpose_sam.toml, fp32 and bf16, then fp32
# through TensorRT (reported unavailable without torch-tensorrt), random ViT-L weights, 512 and 2048 px.
timeout 300 python3 benchmarks/cellpose_sam.py --device cuda --sizes 512 2048 --precisions fp32 bf16 --repeats 3 \
  --json "$OUT/cellpose_sam_cuda.json" 2>"$OUT/cellpose_sam_cuda.err" | tee "$OUT/cellpose_sam_cuda.txt"
timeout 200 python3 benchmarks/cellpose_sam.py --device cuda --sizes 512 2048 --precisions fp32 --runtime tensorrt \
  --repeats 3 --json "$OUT/cellpose_sam_cuda_trt.json" 2>"$OUT/cellpose_sam_cuda_trt.err" | tee "$OUT/cellpose_sam_cuda_trt.txt"
ls -l "$OUT"
