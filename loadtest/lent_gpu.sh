#!/usr/bin/env bash
# How the GPU figures in docs/BENCHMARKS.md were made on a lent machine (no network, python3 with torch,
# onnx and the NVIDIA CUDA 13 pip libraries; see ../shared/GPU.md). onnxruntime-gpu travels here as an xz
# tarball in pieces (.gpu1 ... .gpuN, ignored by git), the service's other wheels with the last piece.
#
# The machine goes back 30 s after a call ends, and with it everything carried: the calls run back to back.
#
#   bash loadtest/lent_gpu.sh pieces        # HERE, before the first call: .gpu1 ... .gpu4 (about 5 minutes)
#   bash loadtest/lent_gpu.sh receive N     # copy piece N to /tmp/gpu
#   bash loadtest/lent_gpu.sh prepare       # install pydantic (with piece 1); export the models in the background
#   bash loadtest/lent_gpu.sh install       # join the onnxruntime-gpu pieces into /tmp/site; wait for the export
#   bash loadtest/lent_gpu.sh bench OUT     # loadtest/bench.py on resnet50 fp16, uint8 input
#   bash loadtest/lent_gpu.sh raw OUT       # the engine alone, CUDA graphs on: resnet50 fp16 and fp32
#   bash loadtest/lent_gpu.sh startup OUT   # loadtest/startup.py
#   bash loadtest/lent_gpu.sh check OUT     # loadtest/gpu_check.py, one process per model, fp32 and fp16
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
SITE=/tmp/site
MODELS=resnet50,mobilenet_v2,vit_b_16,convnext_tiny

with_site() { PYTHONPATH="$SITE:$PWD" "$@"; }

download() { # wheels for the machine's Python 3.12 into folder $1
	local folder=$1
	shift
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d "$folder" "$@"
}

case "$1" in
pieces)
	# onnxruntime-gpu unpacked and xz-compressed (255 MB -> 204 MB): four pieces of at most 55 MB, each under
	# the 64 MiB a call carries with the working tree. What the export needs (pydantic) rides with piece 1,
	# the service's other wheels (versions as in .venv) with piece 4.
	tmp=$(mktemp -d)
	download "$tmp" onnxruntime-gpu==1.31.1
	mkdir "$tmp/x" && (cd "$tmp/x" && python3 -m zipfile -e "$tmp"/onnxruntime_gpu-*.whl .)
	tar -C "$tmp/x" -cf - . | xz -T0 -6 > "$tmp/ort.tar.xz"
	split -b 55000000 -d -a 1 "$tmp/ort.tar.xz" "$tmp/ort.tar.xz."
	rm -rf .gpu1 .gpu2 .gpu3 .gpu4 && mkdir .gpu1 .gpu2 .gpu3 .gpu4
	for i in 0 1 2 3; do mv "$tmp/ort.tar.xz.$i" ".gpu$((i + 1))/"; done
	version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
	for name in pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection \
		typing-extensions; do download .gpu1 "$name==$(version "$name")"; done
	for name in fastapi starlette uvicorn python-multipart httptools pillow anyio annotated-doc opentelemetry-api; do
		download .gpu4 "$name==$(version "$name")"
	done
	download .gpu4 importlib-metadata==10.2.0 zipp==4.1.2 # opentelemetry-api's, not in .venv
	rm -rf "$tmp"
	du -sh .gpu*
	;;
receive)
	mkdir -p /tmp/gpu
	cp ".gpu$2"/* /tmp/gpu/
	;;
prepare)
	mkdir -p "$SITE" /tmp/repos
	python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" /tmp/gpu/*.whl
	export PYTHONPATH=$SITE:$PWD # pydantic (modelrepo/schema.py) comes with the carried wheels
	models=(--model resnet50 --model mobilenet_v2 --model vit_b_16 --model convnext_tiny)
	# Three exports at once, a third of the cores each, random weights (no hub there).
	setsid nohup bash -c "
		OMP_NUM_THREADS=5 python3 export/to_onnx.py ${models[*]} --weights random --output /tmp/repos/fp32 > /tmp/repos/fp32.log 2>&1 &
		OMP_NUM_THREADS=5 python3 export/to_onnx.py ${models[*]} --weights random --fp16 --output /tmp/repos/fp16 > /tmp/repos/fp16.log 2>&1 &
		OMP_NUM_THREADS=5 python3 export/to_onnx.py --model resnet50 --weights random --fp16 --uint8 --output /tmp/repos/fp16u8 > /tmp/repos/fp16u8.log 2>&1 &
		wait; touch /tmp/repos/done" > /dev/null 2>&1 < /dev/null &
	;;
install)
	python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" /tmp/gpu/*.whl
	cat /tmp/gpu/ort.tar.xz.* | xz -d -T0 | tar -x -C "$SITE"
	# onnxruntime.preload_dlls() looks for nvidia/* beside the onnxruntime package: point it at the machine's.
	nvidia=$(python3 -c "import nvidia; print(list(nvidia.__path__)[0])")
	ln -sfn "$nvidia" "$SITE/nvidia"
	with_site python3 -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())"
	for repo in fp16u8 fp16 fp32; do  # resnet50 is exported first in each
		for _ in $(seq 150); do [ -f /tmp/repos/$repo/resnet50/config.json ] && break; sleep 2; done
	done
	ls /tmp/repos/*
	;;
bench)
	# A GPU deployment: batches up to 256, queues deep enough for 256 clients.
	export SERVE_MAX_BATCH_SIZE=256 SERVE_MAX_QUEUE_SIZE=2048 SERVE_MAX_DECODE_BACKLOG=1024
	export SERVE_CUDA_GRAPHS=${SERVE_CUDA_GRAPHS:-false}
	with_site python3 loadtest/bench.py --model resnet50 --repository /tmp/repos/fp16u8 --concurrency 1,16,64,256 \
		--seconds "${SECONDS_PER_POINT:-2}" --no-device-graphs --output "$2/bench_fp16_uint8.json"
	;;
raw)
	export SERVE_MAX_BATCH_SIZE=256
	for precision in fp16 fp32; do
		with_site timeout 200 python3 loadtest/bench.py --model resnet50 --repository /tmp/repos/$precision --raw-only \
			--seconds 1.5 --output "$2/raw_$precision.json" || echo "raw $precision failed: $?"
	done
	;;
startup)
	export SERVE_MAX_BATCH_SIZE=256
	with_site python3 loadtest/startup.py --model resnet50 --repository /tmp/repos/fp16u8 --output "$2/startup.json"
	;;
check)
	for _ in $(seq 150); do [ -f /tmp/repos/done ] && break; sleep 2; done
	mkdir -p /tmp/check
	for precision in fp32 fp16; do
		(
			reference=()
			[ "$precision" = fp16 ] && reference=(--reference-repository /tmp/repos/fp32)
			for model in ${MODELS//,/ }; do
				with_site timeout 300 python3 -m loadtest.gpu_check --repository /tmp/repos/$precision --models "$model" \
					"${reference[@]}" --output "/tmp/check/$precision-$model.json" > "/tmp/check/$precision-$model.log" 2>&1 ||
					echo "gpu_check $precision $model: exit $?"
				grep "^| $model" "/tmp/check/$precision-$model.log" || tail -n 3 "/tmp/check/$precision-$model.log"
			done
		) &
	done
	wait
	python3 -c "import json, glob, sys; json.dump([json.load(open(f)) for f in sorted(glob.glob('/tmp/check/*.json'))], \
		open(sys.argv[1], 'w'), indent=2)" "$2/gpu_check.json"
	tar -czf "$2/check_logs.tgz" -C /tmp/check .
	;;
*)
	echo "usage: $0 receive N | prepare | install | bench OUT | raw OUT | startup OUT | check OUT" >&2
	exit 2
	;;
esac
