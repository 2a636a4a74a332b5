"""gRPC's own parts; the protocol end to end is tests/service/test_inference_clients.py."""

import asyncio
import socket

import grpc
import pytest

from service.config import Settings
from service.errors import DeadlineExceeded, InvalidImage, ModelNotFound, ModelNotReady, QueueFull, TooManyImages
from service.frontend.grpc_server import start_grpc, status_code, trailing_metadata


@pytest.mark.parametrize(
    "error,code",
    [
        (InvalidImage("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("x"), grpc.StatusCode.NOT_FOUND),
        (TooManyImages("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (QueueFull("x", retry_after=2), grpc.StatusCode.UNAVAILABLE),
        (ModelNotReady("x"), grpc.StatusCode.UNAVAILABLE),
        (DeadlineExceeded("x"), grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_errors_map_to_status_codes(error, code):
    assert status_code(error) == code


def test_overload_says_when_to_retry():
    metadata = dict(trailing_metadata(QueueFull("full", retry_after=3)))
    assert metadata == {"error-code": "queue_full", "retry-after": "3", "grpc-retry-pushback-ms": "3000"}
    assert dict(trailing_metadata(InvalidImage("bad"))) == {"error-code": "invalid_image"}


def test_a_taken_port_is_an_error_unless_shared():
    """Alone, the server must not share a port silently (SO_REUSEPORT would let it)."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(host="127.0.0.1", grpc_port=taken.getsockname()[1])

        async def start(shared: bool) -> None:
            server = await start_grpc(settings, state=None, shared_port=shared)
            await server.stop(0)

        with pytest.raises(RuntimeError, match="gRPC cannot listen"):
            asyncio.run(start(False))
        asyncio.run(start(True))
