"""Where a request is received: uvicorn (uvloop, httptools) with the limits uvicorn does not have.

uvicorn parses HTTP well but lets a client take as long as it likes and send as much header as it
likes: a client sending a byte a second holds its connection forever, and 12 MB of headers cost the
event loop a second. `GuardedHttpProtocol` adds what nginx, Kestrel and Go's net/http enforce, checked
as the bytes arrive:

- the request line and headers: at most `max_header_bytes` and `max_header_count` (431), complete
  within `header_timeout_s` of the connection opening or of the previous answer (408);
- the body: on average at least `min_body_rate` bytes/s once `body_grace_s` has passed (408); time the
  server itself is not reading (flow control, 100-continue) is not held against the client;
- connections: a new connection beyond `max_connections` gets 503 when its first request arrives.

A refusal has the JSON shape of every other error and counts in `cnnserve_http_refused_total{reason}`.
The connection then closes gracefully, as does one answered before its body arrived (a 413 on a 60 MB
Content-Length): our side is shut for writing and what the client still sends is read and dropped until
it pauses for `linger_s` (at most LINGER_MAX_S; a client cut off for slowness gets `linger_s` in all), so
the client reads the answer instead of a reset.
"""

import asyncio
import contextlib
import functools
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.config import Settings
from service.errors import error_body

log = logging.getLogger(__name__)

BODY_CHECK_INTERVAL_S = 1.0
LINGER_MAX_S = 30.0  # nginx's lingering_time


def _ignore(reason: str) -> None:
    pass


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int  # request line and headers, per request
    max_header_count: int
    header_timeout_s: float
    min_body_rate: float  # bytes/s, on average, once body_grace_s has passed
    body_grace_s: float
    max_connections: int
    linger_s: float = 2.0
    on_refused: Callable[[str], None] = _ignore  # called with the reason, e.g. to count it

    @classmethod
    def from_settings(cls, settings: Settings, on_refused: Callable[[str], None] = _ignore) -> "HttpLimits":
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout_s=settings.header_timeout_s,
            min_body_rate=settings.min_body_rate,
            body_grace_s=settings.body_grace_s,
            max_connections=settings.max_connections,
            on_refused=on_refused,
        )


class Refusal(Exception):
    """Raised inside a parser callback to refuse the request; caught where the bytes are fed."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def response(self) -> bytes:
        body = json.dumps(error_body(self.reason, self.message)).encode()
        head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        return STATUS_LINE[self.status] + head + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the limits above. One instance per connection."""

    def __init__(self, *args, limits: HttpLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_headers = True  # the next bytes are a request line and headers
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_bytes = 0
        self._body_credit = 0.0  # seconds we were not reading, not held against the client
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_until = 0.0
        self._closing = False  # the answer said Connection: close

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, with the header budget applied before the parser sees the bytes: httptools copies a
        header that arrives in pieces again with every piece, so an unbounded one costs quadratic time."""
        if self._linger_timer is not None:  # answered: drop what the client still sends, close once it pauses
            self._linger_timer.cancel()
            wait = min(self.limits.linger_s, max(0.0, self._linger_until - self.loop.time()))
            self._linger_timer = self.loop.call_later(wait, self.transport.close)
            return
        self._unset_keepalive_if_required()
        try:
            while data and not self.transport.is_closing():
                if self._in_headers:
                    room = self.limits.max_header_bytes - self._header_bytes
                    if room <= 0:
                        limit = self.limits.max_header_bytes
                        raise Refusal(431, "headers_too_large", f"request line and headers over {limit} bytes")
                    chunk, data = data[:room], data[room:]
                    self._header_bytes += len(chunk)
                else:
                    chunk, data = data, b""
                self.parser.feed_data(chunk)
        except Refusal as refusal:
            self._refuse(refusal)
            return
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, Refusal):
                self._refuse(e.__context__)
            else:
                self._refuse(Refusal(400, "bad_request", "invalid HTTP request"))
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(Refusal(400, "bad_request", "invalid HTTP request"))
            return
        if not self._in_headers and self._body_timer is None and not self.transport.is_closing():
            self._body_timer = self.loop.call_later(BODY_CHECK_INTERVAL_S, self._check_body_rate)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_header_count:
            raise Refusal(431, "too_many_headers", f"more than {self.limits.max_header_count} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_timers()
        if self.cycle is None and len(self.connections) > self.limits.max_connections:
            raise Refusal(
                503,
                "too_many_connections",
                f"{len(self.connections)} connections are open, the limit is {self.limits.max_connections}",
            )
        super().on_headers_complete()
        self._close_if_answered_early(self.cycle)
        self._body_started, self._body_bytes, self._body_credit = self.loop.time(), 0, 0.0

    def _close_if_answered_early(self, cycle) -> None:
        """An answer that starts before the request's body has arrived (a 413 on Content-Length) says
        `Connection: close`, so that a keep-alive client does not send its next request on a connection that
        is about to close. The closing itself stays `_linger`'s (graceful), not uvicorn's immediate close."""
        send = cycle.send

        async def send_closing(message) -> None:
            early = message["type"] == "http.response.start" and not self._in_headers and cycle is self.cycle
            if early:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)
            if early:
                cycle.keep_alive = True  # the header is out; uvicorn would close at once, _linger closes gently
                self._closing = True

        cycle.send = send_closing

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_timers()
        self._in_headers, self._header_bytes, self._header_count = True, 0, 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._closing:  # answered before the body came (413 on Content-Length): do not wait for it
            self._linger()
            return
        self._arm_header_timer()  # the next request's headers have header_timeout_s from now

    # -- timers -------------------------------------------------------------------------------

    def _stop_timers(self) -> None:
        """Cancel the header and body timers (not the linger timer: it ends the connection)."""
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _arm_header_timer(self) -> None:
        self._stop_timers()
        self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._on_header_timeout)

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if not self._in_headers or self.transport.is_closing():
            return
        if self._header_bytes == 0:
            self.transport.close()  # idle: nothing to answer
            return
        self._refuse(Refusal(408, "request_timeout", f"headers not received within {self.limits.header_timeout_s:g} s"))

    def _check_body_rate(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self._in_headers or cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            self._body_credit += BODY_CHECK_INTERVAL_S
        limits = self.limits
        held = self.loop.time() - self._body_started - self._body_credit - limits.body_grace_s
        if held > 0 and self._body_bytes < limits.min_body_rate * held:
            elapsed = self.loop.time() - self._body_started
            self._refuse(
                Refusal(
                    408,
                    "request_timeout",
                    f"body arrived at {self._body_bytes / max(elapsed, 1e-3):.0f} bytes/s, "
                    f"the minimum is {limits.min_body_rate:g} bytes/s after {limits.body_grace_s:g} s",
                )
            )
            return
        self._body_timer = self.loop.call_later(BODY_CHECK_INTERVAL_S, self._check_body_rate)

    # -- refusing -----------------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Answer `refusal` unless a response has started, end the request the app may be reading, linger."""
        self.limits.on_refused(refusal.reason)
        log.debug("%s: refused %d %s: %s", self.client, refusal.status, refusal.reason, refusal.message)
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(refusal.response())
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now says http.disconnect; its answer is dropped
            cycle.message_event.set()
        self._linger(patient=refusal.status != 408)  # a client cut off for slowness gets no more time

    def _linger(self, patient: bool = True) -> None:
        """Shut our side for writing and keep reading, so that the answer is not lost to a reset: while the
        client keeps sending, up to LINGER_MAX_S if `patient`, else `linger_s` in all."""
        self._stop_timers()
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._linger_until = self.loop.time() + (LINGER_MAX_S if patient else self.limits.linger_s)
        self._linger_timer = self.loop.call_later(self.limits.linger_s, self.transport.close)


def protocol_factory(limits: HttpLimits) -> type[asyncio.Protocol]:
    """What uvicorn's `http=` takes: called per connection with uvicorn's own arguments."""
    return functools.partial(GuardedHttpProtocol, limits=limits)  # type: ignore[return-value]


def serve(app, settings: Settings, limits: HttpLimits, sockets: list[socket.socket] | None = None) -> None:
    """Run `app` until SIGINT or SIGTERM; uvicorn then stops accepting, drains and runs the lifespan's exit.
    `sockets`: listen on these (a front end, on the supervisor's socket) instead of binding host and port."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_factory(limits),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        log_level="info",
        access_log=settings.access_log,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it drained on; as uvicorn.run does
        uvicorn.Server(config).run(sockets=sockets)
