# syntax=docker/dockerfile:1
# CPU image. Stage `export` has torch and writes the model repository; the runtime stage has only the
# service and its run-time dependencies (no torch), runs as a non-root user and checks /healthz.
#
#   docker build -t cnn-serve .                                   # default models baked in
#   docker build --build-arg EXPORT_MODELS="resnet18 lenet5" -t cnn-serve .
#   docker run -p 8000:8000 -v $PWD/model_repository:/models:ro cnn-serve   # or serve your own

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS export
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The CPU build of torch: the default index would pull CUDA wheels the export does not need.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY models models
COPY modelrepo modelrepo
COPY export export
RUN pip install '.[export,serve]'
ARG EXPORT_MODELS=""
# Empty EXPORT_MODELS exports the default set (resnet50, mobilenet_v2, lenet5).
RUN python export/to_onnx.py --output /model_repository $(for m in $EXPORT_MODELS; do echo --model $m; done)

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 serve
WORKDIR /app
COPY pyproject.toml README.md ./
COPY modelrepo modelrepo
COPY service service
RUN pip install '.[serve]'
COPY --from=export --chown=serve:serve /model_repository /models
USER serve
ENV SERVE_MODEL_REPOSITORY=/models SERVE_HOST=0.0.0.0 SERVE_PORT=8000 SERVE_GRPC_PORT=8001
EXPOSE 8000 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["python", "-m", "service"]
