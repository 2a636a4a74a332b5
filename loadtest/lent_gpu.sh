#!/usr/bin/env bash
# How the GPU figures in docs/BENCHMARKS.md were made on a lent machine (no network, python3 with torch,
# onnx and the NVIDIA CUDA 13 pip libraries; see ../shared/GPU.md). onnxruntime-gpu travels here as an xz
# tarball in pieces (.gpu1 ... .gpuN, ignored by git), the service's other wheels with the last piece.
#
#   bash loadtest/lent_gpu.sh receive N     # copy piece N to /tmp/gpu
#   bash loadtest/lent_gpu.sh export        # in the background: the models, random weights (no hub there)
#   bash loadtest/lent_gpu.sh install       # join the pieces, install into /tmp/site
#   bash loadtest/lent_gpu.sh check OUT     # loadtest/gpu_check.py on fp32 and fp16 exports
#   bash loadtest/lent_gpu.sh bench OUT     # loadtest/bench.py and loadtest/startup.py on resnet50
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
SITE=/tmp/site
MODELS=resnet50,mobilenet_v2,vit_b_16,convnext_tiny

with_site() { PYTHONPATH="$SITE:$PWD" "$@"; }

case "$1" in
receive)
	mkdir -p /tmp/gpu
	cp ".gpu$2"/* /tmp/gpu/
	ls -la /tmp/gpu
	;;
export)
	mkdir -p /tmp/repos
	models=(--model resnet50 --model mobilenet_v2 --model vit_b_16 --model convnext_tiny)
	# Three exports at once, a third of the cores each; the machine's own onnxruntime checks parity.
	setsid nohup bash -c "
		OMP_NUM_THREADS=5 python3 export/to_onnx.py ${models[*]} --weights random --output /tmp/repos/fp32 > /tmp/repos/fp32.log 2>&1 &
		OMP_NUM_THREADS=5 python3 export/to_onnx.py ${models[*]} --weights random --fp16 --output /tmp/repos/fp16 > /tmp/repos/fp16.log 2>&1 &
		OMP_NUM_THREADS=5 python3 export/to_onnx.py --model resnet50 --weights random --fp16 --uint8 --output /tmp/repos/fp16u8 > /tmp/repos/fp16u8.log 2>&1 &
		wait; touch /tmp/repos/done" > /dev/null 2>&1 < /dev/null &
	;;
install)
	mkdir -p "$SITE"
	cat /tmp/gpu/ort.tar.xz.* | xz -d -T0 | tar -x -C "$SITE"
	python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" /tmp/gpu/*.whl
	# onnxruntime.preload_dlls() looks for nvidia/* beside the onnxruntime package: point it at the machine's.
	nvidia=$(python3 -c "import nvidia, os; print(list(nvidia.__path__)[0])")
	ln -sfn "$nvidia" "$SITE/nvidia"
	with_site python3 -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())"
	;;
check)
	out=$2
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/nvidia-smi.txt"
	with_site python3 -m loadtest.gpu_check --repository /tmp/repos/fp32 --models "$MODELS" \
		--output "$out/gpu_check_fp32.json" || true
	with_site python3 -m loadtest.gpu_check --repository /tmp/repos/fp16 --models "$MODELS" \
		--reference-repository /tmp/repos/fp32 --output "$out/gpu_check_fp16.json" || true
	;;
bench)
	out=$2
	repo=${3:-/tmp/repos/fp16u8}
	name=${4:-bench}
	# A GPU deployment: batches up to 256, queues deep enough for 256 clients, CUDA graphs per bucket.
	export SERVE_MAX_BATCH_SIZE=256 SERVE_MAX_QUEUE_SIZE=2048 SERVE_MAX_DECODE_BACKLOG=1024
	export SERVE_CUDA_GRAPHS=${SERVE_CUDA_GRAPHS:-true}
	with_site python3 loadtest/bench.py --model resnet50 --repository "$repo" --concurrency 1,16,64,256 \
		--seconds "${SECONDS_PER_POINT:-3}" --output "$out/$name.json" 2>&1 | tee "$out/$name.txt"
	;;
startup)
	out=$2
	repo=${3:-/tmp/repos/fp16u8}
	export SERVE_MAX_BATCH_SIZE=256 SERVE_CUDA_GRAPHS=true
	with_site python3 loadtest/startup.py --model resnet50 --repository "$repo" --output "$out/startup.json" 2>&1 |
		tee "$out/startup.txt"
	;;
*)
	echo "usage: $0 receive N | export | install | check OUT | bench OUT [REPO NAME] | startup OUT [REPO]" >&2
	exit 2
	;;
esac
