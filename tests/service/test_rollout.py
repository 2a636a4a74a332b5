"""A rollout under load, as a user does it, in each process layout: `python -m service` follows the repository
(SERVE_MODEL_CONTROL=poll) or is told to load (explicit) while 32 clients send requests back to back; version 2
is written as export writes it, takes over, and is rolled back by removing its folder. No request fails."""

import asyncio
import shutil
import time

import httpx
import pytest

from loadtest.server import running_service
from tests.service.conftest import image_bytes, write_rgb

CLIENTS = 32
IMAGE = image_bytes((255, 0, 0))


class Traffic:
    """`CLIENTS` clients classifying back to back: every status and answering version, in order of arrival."""

    def __init__(self, url: str):
        self.url, self.outcomes, self._stop = url, [], asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=self.url, timeout=30, limits=limits) as client:
            await asyncio.gather(*(self._client(client) for _ in range(CLIENTS)))

    async def _client(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            response = await client.post("/v1/classify?model=tiny_rgb", content=IMAGE)
            version = response.json().get("version") if response.status_code == 200 else None
            self.outcomes.append((response.status_code, version, response.text if version is None else ""))

    async def until(self, version: int, timeout: float = 60) -> None:
        """Until `CLIENTS` answers in a row come from `version`."""
        deadline = time.monotonic() + timeout
        while [v for _, v, _ in self.outcomes[-CLIENTS:]] != [version] * CLIENTS:
            assert time.monotonic() < deadline, f"version {version} never took over: {self.outcomes[-3:]}"
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


async def roll_out_and_back(url: str, repo, load=None) -> list:
    traffic = Traffic(url)
    running = asyncio.ensure_future(traffic.run())
    await traffic.until(1)
    write_rgb(repo, versions=(2,))  # what `python export/to_onnx.py --version 2` writes
    if load is not None:
        await load()
    await traffic.until(2)
    shutil.rmtree(repo / "tiny_rgb" / "2")  # the rollback
    if load is not None:
        await load()
    await traffic.until(1)
    traffic.stop()
    await running
    return traffic.outcomes


def check(outcomes: list) -> None:
    failed = [o for o in outcomes if o[0] != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed: {failed[:3]}"
    versions = [v for _, v, _ in outcomes]
    changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert changes[0] == 1 and 2 in changes and changes[-1] == 1


def service_env(workers: str, control: str) -> dict[str, str]:
    return {
        "SERVE_WORKERS": workers,
        "SERVE_PROVIDERS": "cpu",
        "SERVE_INTRA_OP_THREADS": "1",
        "SERVE_MODEL_CONTROL": control,
    }


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one process", "workers"])
def test_poll_picks_up_a_new_version_and_its_removal_under_load(tmp_path, workers):
    write_rgb(tmp_path)
    env = service_env(workers, "poll") | {"SERVE_POLL_INTERVAL_S": "0.2"}
    with running_service(tmp_path, [], env=env, timeout=120) as (url, _):
        check(asyncio.run(roll_out_and_back(url, tmp_path)))


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one process", "workers"])
def test_explicit_load_swaps_versions_under_load(tmp_path, workers):
    write_rgb(tmp_path)
    with running_service(tmp_path, ["tiny_rgb"], env=service_env(workers, "explicit"), timeout=120) as (url, _):

        async def load() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                response = await client.post("/v1/repository/models/tiny_rgb/load")
                assert response.status_code == 200, response.text

        check(asyncio.run(roll_out_and_back(url, tmp_path, load)))
