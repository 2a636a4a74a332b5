import asyncio
import base64
import json

import pytest

import service.frontend.request_body as request_body
from service.errors import BadRequest, TooManyImages, UnsupportedMediaType
from service.frontend.request_body import (
    EXTRA_FORM_FIELDS,
    base64_images,
    multipart_images,
    split_body,
    unless_disconnected,
)
from tests.service.conftest import image_bytes

BOUNDARY = "b0undary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """(field name, filename or None, data) per part."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_multipart_files_are_images_and_fields_are_not():
    body = multipart([("file", "a.png", b"A"), ("note", None, b"hello"), ("file", "b.png", b"B")])
    assert multipart_images(body, MULTIPART, 4) == [("image 0 (a.png)", b"A"), ("image 1 (b.png)", b"B")]


def test_ten_thousand_parts_stop_at_the_limit(monkeypatch):
    body = multipart([("file", f"{i}.png", b"x") for i in range(10_000)])
    begun = []
    original = request_body.MultipartParser

    class Counting(original):
        def __init__(self, boundary, callbacks):
            on_part_begin = callbacks["on_part_begin"]
            callbacks["on_part_begin"] = lambda: (begun.append(1), on_part_begin())
            super().__init__(boundary, callbacks)

    monkeypatch.setattr(request_body, "MultipartParser", Counting)
    with pytest.raises(TooManyImages, match="limit is 64"):
        multipart_images(body, MULTIPART, 64)
    assert len(begun) == 64 + EXTRA_FORM_FIELDS + 1  # parsing stopped at the first part too many


def test_malformed_multipart_is_a_bad_request():
    with pytest.raises(BadRequest, match="boundary"):
        multipart_images(b"--x\r\n", "multipart/form-data", 4)
    with pytest.raises(BadRequest, match="malformed multipart"):
        multipart_images(b"--b0undary\r\nno-colon-header\r\n\r\nx", MULTIPART, 4)


def test_json_count_is_checked_before_any_base64_is_decoded(monkeypatch):
    decoded = []
    monkeypatch.setattr(request_body.base64, "b64decode", lambda text, validate: decoded.append(text))
    body = json.dumps({"images": ["QUFB"] * 10_000}).encode()
    with pytest.raises(TooManyImages, match="10000 images"):
        base64_images(body, 64)
    assert decoded == []


def test_json_images_and_data_urls():
    png = image_bytes()
    body = json.dumps({"images": [base64.b64encode(png).decode(), "data:image/png;base64,QUFB"]}).encode()
    assert base64_images(body, 4) == [("image 0", png), ("image 1", b"AAA")]
    with pytest.raises(BadRequest, match="image 0: invalid base64"):
        base64_images(b'{"images": ["***"]}', 4)


@pytest.mark.parametrize("content_type", ["image/png", "application/octet-stream", ""])
def test_raw_bodies_are_one_image(content_type):
    assert split_body(b"data", content_type, 4) == [("image 0", b"data")]


def test_unknown_content_types_are_refused():
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        split_body(b"data", "text/plain", 4)


class FakeRequest:
    """Stands in for the ASGI receive channel once the body has been read."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_work_is_cancelled_when_the_client_leaves():
    async def main():
        request, cancelled = FakeRequest(), asyncio.Event()

        async def work():
            try:
                await asyncio.sleep(60)
            finally:
                cancelled.set()

        task = asyncio.ensure_future(unless_disconnected(request, work()))
        await asyncio.sleep(0.01)
        request.gone.set()
        with pytest.raises(Exception, match="client left") as left:
            await task
        assert left.value.status_code == 499
        assert cancelled.is_set()

    asyncio.run(main())


def test_work_that_finishes_first_is_answered():
    async def main():
        async def work():
            return 42

        assert await unless_disconnected(FakeRequest(), work()) == 42

    asyncio.run(main())
