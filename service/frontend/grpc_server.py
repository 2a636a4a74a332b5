"""The Open Inference Protocol over gRPC: KServe's `inference.GRPCInferenceService` as Triton serves it
(ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig, ModelInfer, and the repository
extension: RepositoryIndex, RepositoryModelLoad and RepositoryModelUnload, restricted as over HTTP), on
SERVE_GRPC_PORT beside HTTP. Messages and stubs are the ones tritonclient generates from the published proto;
methods Triton adds beyond these answer UNIMPLEMENTED.

Started and drained by the app's lifespan, in every front end: with workers, each front end listens on the port
with SO_REUSEPORT and the kernel spreads connections over them. Inference takes /v1/classify's path
(service/frontend/inference.py); errors map to gRPC status codes here, in one place.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Callable

import grpc
import numpy as np
from google.protobuf import json_format
from grpc import aio
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from service.config import Settings
from service.errors import BadRequest, ClientClosedRequest, InvalidArgument, ServiceError
from service.frontend.inference import infer_images, infer_tensor
from service.frontend.model_metadata import model_config, model_metadata, server_metadata, version_number
from service.frontend.routes.repository import check_control, model_name, v2_index_entries
from service.frontend.tensors import (
    BYTES,
    NUMERIC,
    InputTensor,
    ModelSignature,
    RequestedOutput,
    checked_header,
    from_raw,
    model_input,
    numeric_from_list,
    output_tensor,
    requested_outputs,
    serialize_bytes,
    shown,
)
from service.schemas import ModelState
from service.state import ServiceState
from service.status import all_ready, require

log = logging.getLogger(__name__)

# HTTP status -> gRPC code, after gRPC's own HTTP mapping: overload and not-ready are UNAVAILABLE (retryable).
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.UNAVAILABLE,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# InferTensorContents' field for each datatype (FP16 has none: raw contents only).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
MESSAGE_OVERHEAD = 64 * 1024  # protobuf framing around a request's tensors
LARGE_CONTENTS = 65536  # typed values above which a request's conversion runs in the large-image lane


def status_code(error: ServiceError) -> grpc.StatusCode:
    return STATUS_CODES.get(error.status_code, grpc.StatusCode.INTERNAL)


def trailing_metadata(error: ServiceError) -> tuple[tuple[str, str], ...]:
    """The service's error code, and when to retry: `retry-after` (seconds, as HTTP's header) and gRPC's own
    `grpc-retry-pushback-ms`, which its retry policy honours."""
    metadata = [("error-code", error.code)]
    if "Retry-After" in error.headers:
        seconds = error.headers["Retry-After"]
        metadata += [("retry-after", seconds), ("grpc-retry-pushback-ms", str(int(float(seconds) * 1000)))]
    return tuple(metadata)


def _answering_errors(method: Callable) -> Callable:
    """A service error becomes the call's status, with its message; anything else is INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapper(self: "InferenceServicer", request, context: aio.ServicerContext):
        try:
            return await method(self, request, context)
        except ServiceError as e:
            await context.abort(status_code(e), e.message, trailing_metadata(e))
        except Exception:
            log.exception("unhandled error in gRPC %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")

    return wrapper


def _parameter(parameters, key: str) -> int:
    if key not in parameters:
        return 0
    which = parameters[key].WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise BadRequest(f"parameter {key!r} must be an integer")
    return getattr(parameters[key], which)


def _input(tensor: service_pb2.ModelInferRequest.InferInputTensor, raw: bytes | None, max_images: int) -> InputTensor:
    shape, count = checked_header(tensor.name, tensor.datatype, list(tensor.shape), max_images)
    if raw is not None:
        return from_raw(tensor.name, tensor.datatype, shape, count, raw)
    if tensor.datatype not in CONTENTS:
        raise BadRequest(f"input {shown(tensor.name)}: {tensor.datatype} data must be in raw_input_contents")
    contents = getattr(tensor.contents, CONTENTS[tensor.datatype])
    if len(contents) != count:
        raise BadRequest(f"input {shown(tensor.name)}: {len(contents)} values, its shape needs {count}")
    if tensor.datatype == BYTES:
        return InputTensor(tensor.name, BYTES, shape, list(contents))
    try:  # fromiter: a quarter of np.asarray's time on protobuf's repeated fields (130 ms for 16 MB of FP32)
        values = np.fromiter(contents, dtype=NUMERIC[tensor.datatype], count=len(contents))
    except (TypeError, ValueError, OverflowError) as e:
        raise BadRequest(f"input {shown(tensor.name)}: contents are not all {tensor.datatype}: {str(e)[:200]}") from e
    return InputTensor(
        tensor.name, tensor.datatype, shape, numeric_from_list(values, tensor.datatype, shape, tensor.name)
    )


def _typed_values(request: service_pb2.ModelInferRequest) -> int:
    return sum(len(getattr(t.contents, CONTENTS[t.datatype])) for t in request.inputs if t.datatype in CONTENTS)


def _inputs(request: service_pb2.ModelInferRequest, max_images: int) -> list[InputTensor]:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    return [_input(t, raw[i] if raw else None, max_images) for i, t in enumerate(request.inputs)]


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, state: ServiceState):
        self.state = state

    @_answering_errors
    async def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    @_answering_errors
    async def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=all_ready(await self.state.models.fresh_statuses()))

    @_answering_errors
    async def ModelReady(self, request, context):
        """A version not served is not ready (as HTTP's 404, which Triton's clients read as not ready)."""
        status = require(await self.state.models.fresh_statuses(), request.name, ready=False)
        try:
            number = version_number(request.name, request.version)
        except ServiceError:
            return service_pb2.ModelReadyResponse(ready=False)
        found = status if number is None else status.version_status(number)
        return service_pb2.ModelReadyResponse(ready=found is not None and found.state is ModelState.READY)

    @_answering_errors
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(server_metadata(), service_pb2.ServerMetadataResponse())

    @_answering_errors
    async def ModelMetadata(self, request, context):
        number = version_number(request.name, request.version)
        status = require(await self.state.models.fresh_statuses(), request.name, version=number)
        return json_format.ParseDict(model_metadata(status), service_pb2.ModelMetadataResponse())

    @_answering_errors
    async def ModelConfig(self, request, context):
        number = version_number(request.name, request.version)
        status = require(await self.state.models.fresh_statuses(), request.name, version=number)
        policy = self.state.settings.version_policy
        config = json_format.ParseDict(model_config(status, policy), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    @_answering_errors
    async def RepositoryIndex(self, request, context):
        entries = v2_index_entries(await self.state.models.fresh_statuses(), request.ready)
        return json_format.ParseDict({"models": entries}, service_pb2.RepositoryIndexResponse())

    @_answering_errors
    async def RepositoryModelLoad(self, request, context):
        check_control(self.state.settings, dict(context.invocation_metadata()).get("authorization"))
        await self.state.models.load(model_name(request.model_name))
        return service_pb2.RepositoryModelLoadResponse()

    @_answering_errors
    async def RepositoryModelUnload(self, request, context):
        check_control(self.state.settings, dict(context.invocation_metadata()).get("authorization"))
        await self.state.models.unload(model_name(request.model_name))
        return service_pb2.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request, context):
        """Counted in /metrics as /v1/classify and V2 over HTTP are, by the HTTP status it stands for."""
        started, code, model = time.perf_counter(), 500, request.model_name
        try:
            response = await self._infer(request, context)
            code = 200
            return response
        except ServiceError as e:
            code = e.status_code
            await context.abort(status_code(e), e.message, trailing_metadata(e))
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            code = ClientClosedRequest.status_code
            raise
        except Exception:
            log.exception("unhandled error in gRPC ModelInfer")
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        finally:
            metrics = self.state.metrics
            label = model if model in self.state.models.statuses() else "unknown"
            metrics.requests.labels(label, str(code), "grpc").inc()
            metrics.request_latency.labels(label).observe(time.perf_counter() - started)

    async def _infer(self, request, context):
        received = time.monotonic()
        state, settings = self.state, self.state.settings
        number = version_number(request.model_name, request.model_version)
        status = await state.models.ready(request.model_name, number)
        signature = ModelSignature.of(status)

        raw = request.raw_input_contents
        max_images = settings.max_images_per_request
        if raw or _typed_values(request) <= LARGE_CONTENTS:
            inputs = _inputs(request, max_images)
        else:  # typed contents convert one value at a time: a 16 MB message is 130 ms, off the event loop
            large = state.decode_pool.large
            large.reserve(1)
            inputs = await large.run(_inputs, request, max_images)
        wanted = [
            RequestedOutput(o.name, classification=_parameter(o.parameters, "classification")) for o in request.outputs
        ]
        outputs = requested_outputs(signature, wanted, settings.max_top_k)
        timeout_ms = settings.request_timeout_ms
        if "timeout" in request.parameters:
            timeout_ms = _parameter(request.parameters, "timeout") / 1000
            if not 0 < timeout_ms <= settings.max_request_timeout_ms:
                raise InvalidArgument(f"timeout must be between 1 and {settings.max_request_timeout_ms * 1000:g} us")
        remaining = context.time_remaining()
        deadline = received + min(timeout_ms / 1000, remaining if remaining is not None else float("inf"))

        images, batch = model_input(signature, inputs, max_images)
        if images is not None:
            answers = await infer_images(state, status, images, deadline, version=number, embedded=True)
        else:
            answers = await infer_tensor(state, status, batch, deadline, version=number)

        logits = np.stack([a.output for a in answers])
        response = service_pb2.ModelInferResponse(
            model_name=status.name, model_version=str(answers[0].version), id=request.id
        )
        for output in outputs:
            tensor = output_tensor(signature, output, logits)
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            data = serialize_bytes(tensor.data) if tensor.datatype == BYTES else tensor.data.astype("<f4").tobytes()
            response.raw_output_contents.append(data)
        return response


async def start_grpc(settings: Settings, state: ServiceState, *, shared_port: bool) -> aio.Server:
    """The gRPC server, listening. `shared_port`: several front ends listen on the port (SO_REUSEPORT); alone,
    a port already taken is an error rather than silently shared."""
    server = aio.server(
        options=[
            ("grpc.so_reuseport", 1 if shared_port else 0),
            ("grpc.max_receive_message_length", settings.max_request_bytes + MESSAGE_OVERHEAD),
        ],
        maximum_concurrent_rpcs=settings.max_connections,
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(state), server)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise RuntimeError(f"gRPC cannot listen on {address}: {e}") from e
    if port == 0:
        raise RuntimeError(f"gRPC cannot listen on {address}")
    await server.start()
    log.info("gRPC (Open Inference Protocol) on %s", address)
    return server
