"""What the Open Inference Protocol says about the server and its models, as dicts that V2 over HTTP answers as
JSON and gRPC parses into its messages: server metadata, model metadata, and Triton's model configuration
(the model_configuration extension), which Triton's image clients read to learn the input's layout."""

from importlib import metadata

from modelrepo.versions import VersionPolicy
from service.errors import ModelNotFound
from service.frontend.tensors import ModelSignature
from service.schemas import ModelState
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


def version_number(name: str, version: str | None) -> int | None:
    """A V2 path's or message's version as a number; one that is not a version number is a 404."""
    if not version:
        return None
    if not version.isdigit() or len(version) > 9:
        shown = version if len(version) <= 20 else version[:20] + "..."
        raise ModelNotFound(f"model {name!r} has no version {shown!r}")
    return int(version)


def model_metadata(status: ModelStatus) -> dict:
    signature = ModelSignature.of(status)
    return {
        "name": status.name,
        "versions": [str(v.version) for v in status.versions if v.state is ModelState.READY],
        "platform": PLATFORM,
        "inputs": [
            {"name": signature.input_name, "datatype": signature.input_datatype, "shape": [-1, *signature.input_dims]}
        ],
        "outputs": [{"name": signature.output_name, "datatype": "FP32", "shape": [-1, signature.num_classes]}],
    }


def model_config(status: ModelStatus, version_policy: str | None) -> dict:
    """Triton's config.pbtxt as JSON, from what is in effect (config.json with the environment's overrides)."""
    signature = ModelSignature.of(status)
    policy = VersionPolicy.parse(version_policy or status.source.config.version_policy)
    triton_policy = {
        "latest": {"latest": {"num_versions": policy.count}},
        "specific": {"specific": {"versions": list(policy.versions)}},
        "all": {"all": {}},
    }[policy.kind]
    batching = status.batching
    on_gpu = any(p in GPU_PROVIDERS for p in status.providers)
    return {
        "name": status.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": triton_policy,
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
