"""Each attack of issue 13 at small scale, against `python -m service` as it runs in production: a real
process, real sockets. Every test checks what the attacker gets and that the service still answers a
normal request; the service's log must never show a traceback.

Limits are scaled down (1 s header timeout, 8 kB of headers, 8 images) so each attack takes about a second.
`LAYOUTS` lists the process layouts the service has; every test runs in each.
"""

import asyncio
import json
import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest import hostile
from loadtest.server import running_service
from modelrepo.schema import Batching
from tests.service.conftest import image_bytes, write_gray, write_rgb

LAYOUTS = {"one process": {"SERVE_WORKERS": "1"}, "workers": {"SERVE_WORKERS": "2"}}
LIMITS = {
    "SERVE_HEADER_TIMEOUT_S": "1",
    "SERVE_BODY_GRACE_S": "0.5",
    "SERVE_MIN_BODY_RATE": "4096",
    "SERVE_MAX_HEADER_BYTES": "8192",
    "SERVE_MAX_IMAGES_PER_REQUEST": "8",
    "SERVE_INTRA_OP_THREADS": "1",
    "SERVE_DECODE_WORKERS": "1",  # one thread per lane: a backlog is easy to build
    "SERVE_PROVIDERS": "cpu",
}
URL = "/v1/classify?model=tiny_rgb"
WAITING_URL = "/v1/classify?model=tiny_waiting"  # its batches wait 1.5 s for company


@pytest.fixture(scope="module", params=list(LAYOUTS))
def service(request, tmp_path_factory):
    """(base URL, host, port, log path) of a running service."""
    root = tmp_path_factory.mktemp("hostile")
    repo = root / "repository"
    write_rgb(repo)
    write_gray(repo)
    write_rgb(repo, "tiny_waiting", batching=Batching(max_batch_size=8, max_queue_delay_ms=1500, max_queue_size=64))
    log_path = root / "service.log"
    with (
        log_path.open("w") as log,
        running_service(repo, [], env={**LIMITS, **LAYOUTS[request.param]}, log=log) as (base, _),
    ):
        host, port = base.removeprefix("http://").split(":")
        yield base, host, int(port), log_path
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


def post(path: str, body: bytes, content_type: str = "image/png") -> bytes:
    return hostile.request_bytes("POST", path, {"Content-Type": content_type}, body)


def error_code(service, data: bytes) -> tuple[int, str]:
    """(status, error code) of one request on a fresh connection."""

    async def one():
        _, host, port, _ = service
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        status, body = await asyncio.wait_for(hostile.read_response(reader), 10)
        writer.close()
        return status, json.loads(body)["error"]["code"]

    return asyncio.run(one())


def assert_serves(service) -> None:
    base = service[0]
    response = httpx.post(base + URL, content=image_bytes((0, 255, 0)), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["predictions"][0]["label"] == "green"


def counts(service) -> dict[str, float]:
    """cnnserve_* samples by name and labels, e.g. 'cnnserve_requests_total{api=v1,code=499,model=tiny_rgb}'."""
    text = httpx.get(service[0] + "/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], pattern: str) -> float:
    return sum(v for k, v in samples.items() if re.fullmatch(pattern, k))


def trickle(service, head: bytes, tail: bytes, step: int, interval: float) -> int:
    _, host, port, _ = service
    tally = hostile.Tally.empty()
    asyncio.run(hostile.trickle(host, port, head, tail, step, interval, asyncio.Event(), tally))
    (status,) = tally.statuses
    return status


def test_a_thin_png_is_refused_from_its_header(service):
    assert error_code(service, post(URL, hostile.png(1, 6000))) == (413, "aspect_ratio_too_large")
    assert error_code(service, post(URL, hostile.png(1, 200_000, "L"))) == (413, "aspect_ratio_too_large")
    assert_serves(service)


def test_a_png_text_bomb_is_a_bad_image(service):
    assert error_code(service, post(URL, hostile.png_text_bomb(chunks=4))) == (400, "invalid_image")
    assert_serves(service)


def test_headers_sent_slowly_get_408(service):
    assert trickle(service, b"", post(URL, image_bytes()), 1, 0.05) == 408  # 20 bytes/s of headers
    assert_serves(service)


def test_a_body_sent_slowly_gets_408(service):
    head = hostile.request_bytes("POST", URL, {"Content-Type": "image/png", "Content-Length": "100000"})[:-2]
    assert trickle(service, head + b"\r\n", b"x" * 100_000, 100, 0.1) == 408  # 1 kB/s
    assert_serves(service)


def test_oversized_headers_get_431(service):
    big = hostile.request_bytes("GET", "/healthz", {"X-Big": "a" * 100_000})
    assert error_code(service, big) == (431, "headers_too_large")
    many = hostile.request_bytes("GET", "/healthz", {f"X-{i}": "1" for i in range(200)})
    assert error_code(service, many) == (431, "too_many_headers")
    assert_serves(service)


def test_a_client_leaving_mid_body_is_counted_apart_not_as_a_server_error(service):
    before = counts(service)
    _, host, port, _ = service
    partial = post(URL, image_bytes(size=(400, 400)))[:-500]
    asyncio.run(hostile.hang_up(host, port, partial, 0.2))
    assert_serves(service)
    after = counts(service)
    assert total(after, r"cnnserve_requests_total\{api=v1,code=499,.*") > total(
        before, r"cnnserve_requests_total\{api=v1,code=499,.*"
    )
    assert total(after, r"cnnserve_requests_total\{api=\w+,code=5.*") == 0


def test_ten_thousand_multipart_parts_stop_at_the_limit(service):
    body, content_type = hostile.multipart(10_000, image_bytes())
    assert error_code(service, post(URL, body, content_type)) == (413, "too_many_images")
    assert_serves(service)


def test_ten_thousand_base64_images_are_counted_before_decoding(service):
    body = hostile.json_images(10_000, image_bytes())
    assert error_code(service, post(URL, body, "application/json")) == (413, "too_many_images")
    assert_serves(service)


def test_a_backlog_of_expired_requests_is_never_decoded(service, request):
    """Three 2048 x 2048 PNGs (the largest the small lane takes) hold its one thread; twenty requests that
    may wait 30 ms queue behind them, and are answered 504 without being decoded. With workers each front end
    has its own lane and the kernel picks the front end per connection: those that reach an idle one are
    decoded, and answered (or, on a busy machine, expire after decoding, which their message says)."""
    _, host, port, _ = service
    blocker, expiring = post(URL, hostile.png(2048, 2048)), post(URL + "&timeout_ms=30", image_bytes())

    async def answer(data: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        try:
            return await hostile.read_response(reader)
        finally:
            writer.close()

    async def backlog() -> list[tuple[int, bytes]]:
        blockers = [asyncio.ensure_future(answer(blocker)) for _ in range(3)]
        await asyncio.sleep(0.05)
        expired = await asyncio.gather(*(answer(expiring) for _ in range(20)))
        return [*await asyncio.gather(*blockers), *expired]

    decoded = r"cnnserve_decode_duration_seconds_count\{.*"
    before = total(counts(service), decoded)
    answers = asyncio.run(backlog())
    statuses = [status for status, _ in answers]
    never_decoded = [
        status for status, body in answers[3:] if status == 504 and "before the image was decoded" in body.decode()
    ]
    assert statuses[:3] == [200] * 3
    if request.node.callspec.params["service"] == "one process":
        assert len(never_decoded) == 20
    assert set(statuses[3:]) <= {200, 504} and never_decoded  # some front end holds a blocker
    assert total(counts(service), decoded) == before + 23 - len(never_decoded)
    assert_serves(service)


def test_a_disconnected_clients_queued_work_is_not_run(service):
    before = counts(service)
    _, host, port, _ = service
    data = post(WAITING_URL, image_bytes())

    async def three_hang_ups():
        await asyncio.gather(*(hostile.hang_up(host, port, data, 0.3) for _ in range(3)))
        await asyncio.sleep(2.0)  # past the batch's 1.5 s wait

    asyncio.run(three_hang_ups())
    after = counts(service)
    model = "model=tiny_waiting"
    assert after[f"cnnserve_requests_total{{api=v1,code=499,{model}}}"] == 3
    assert after[f"cnnserve_batch_size_count{{{model}}}"] == before[f"cnnserve_batch_size_count{{{model}}}"]
    assert_serves(service)


@pytest.mark.parametrize("timeout", ["inf", "nan", "1e308"])
def test_a_timeout_without_a_deadline_is_refused(service, timeout):
    status, code = error_code(service, post(URL + f"&timeout_ms={timeout}", image_bytes()))
    assert status == 422 and code in ("validation_error", "invalid_argument")
    assert_serves(service)


def test_a_body_far_over_the_limit_gets_its_413_not_a_reset(service):
    """The service answers from Content-Length before reading the body; the client, still sending, must
    read that answer (a close with unread data would reset the connection)."""
    response = httpx.post(service[0] + URL, content=b"x" * 60_000_000, headers={"content-type": "image/png"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert_serves(service)
