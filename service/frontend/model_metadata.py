"""What the Open Inference Protocol says about the server and its models, as dicts that V2 over HTTP answers as
JSON and gRPC parses into its messages: server metadata, model metadata, and Triton's model configuration
(the model_configuration extension), which Triton's image clients read to learn the input's layout."""

from importlib import metadata

from service.errors import ModelNotFound
from service.frontend.tensors import ModelSignature
from service.status import ModelStatus

SERVER_NAME = "cnn-serve"
EXTENSIONS = ("classification", "binary_tensor_data", "model_configuration")
PLATFORM = "onnxruntime_onnx"
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def check_version(status: ModelStatus, version: str | None) -> None:
    """A request for a version other than the one served is a 404 that names the one served."""
    if version is not None and version != str(status.source.version):
        shown = version if len(version) <= 20 else version[:20] + "..."
        raise ModelNotFound(
            f"model {status.name!r} has no version {shown!r} serving; it serves {status.source.version}"
        )


def model_metadata(status: ModelStatus) -> dict:
    signature = ModelSignature.of(status)
    return {
        "name": status.name,
        "versions": [str(status.source.version)],
        "platform": PLATFORM,
        "inputs": [
            {"name": signature.input_name, "datatype": signature.input_datatype, "shape": [-1, *signature.input_dims]}
        ],
        "outputs": [{"name": signature.output_name, "datatype": "FP32", "shape": [-1, signature.num_classes]}],
    }


def model_config(status: ModelStatus) -> dict:
    """Triton's config.pbtxt as JSON, from what is in effect (config.json with the environment's overrides)."""
    signature = ModelSignature.of(status)
    batching = status.batching
    on_gpu = any(p in GPU_PROVIDERS for p in status.providers)
    return {
        "name": status.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": batching.max_batch_size,
        "input": [
            {
                "name": signature.input_name,
                "data_type": f"TYPE_{signature.input_datatype}",
                "format": "FORMAT_NCHW",
                "dims": list(signature.input_dims),
            }
        ],
        "output": [
            {
                "name": signature.output_name,
                "data_type": "TYPE_FP32",
                "dims": [signature.num_classes],
                "label_filename": status.source.config.labels_file,
            }
        ],
        "dynamic_batching": {
            "preferred_batch_size": batching.preferred_batch_sizes,
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": batching.max_queue_size},
        },
        "instance_group": [{"kind": "KIND_GPU" if on_gpu else "KIND_CPU", "count": 1}],
    }
