"""Models by version, in one process: what the repository and the policy ask for is loaded beside what serves,
takes over, and the old version answers what it had before it is released. Requests run throughout."""

import asyncio
import shutil
import time

import numpy as np
import pytest

from modelrepo.layout import MODEL_FILE
from service.config import Settings
from service.engine.models import Models
from service.errors import ModelLoadFailed, ModelNotFound, ModelNotReady
from service.metrics import Metrics
from service.schemas import ModelState
from service.status import InferenceResult, all_ready
from tests.service.conftest import write_gray, write_rgb

IMAGE = np.full((3, 16, 16), 0.5, np.float32)


def settings(root, **overrides) -> Settings:
    return Settings(model_repository=root, providers=["cpu"], intra_op_threads=1, **overrides)


async def started(root, **overrides) -> Models:
    models = Models(settings(root, **overrides), Metrics())
    await models.start()
    await settle(models)
    return models


async def settle(models: Models) -> None:
    while any(s.state is ModelState.LOADING for s in models.statuses().values()):
        await asyncio.sleep(0.01)


async def classify(models: Models, name: str = "tiny_rgb", version: int | None = None) -> InferenceResult:
    status = await models.ready(name, version)
    reservation = await models.reserve(status, 1, version)
    try:
        (result,) = await models.infer(status, reservation, [IMAGE], time.monotonic() + 10)
    finally:
        reservation.release()
    return result


def states(models: Models, name: str = "tiny_rgb") -> dict[int, ModelState]:
    return {v.version: v.state for v in models.statuses()[name].versions}


def failures(models: Models, name: str = "tiny_rgb") -> float:
    return models.metrics.load_failures.labels(name)._value.get()


async def traffic(models: Models, stop: asyncio.Event, clients: int = 32) -> list:
    """`clients` requesting back to back until `stop`: every outcome, results and errors."""

    async def client() -> list:
        outcomes = []
        while not stop.is_set():
            try:
                outcomes.append(await classify(models))
            except Exception as e:
                outcomes.append(e)
        return outcomes

    return [o for outcomes in await asyncio.gather(*(client() for _ in range(clients))) for o in outcomes]


def test_a_new_version_takes_over_under_load_without_a_failed_request(tmp_path):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="poll", poll_interval_s=3600)
        stop = asyncio.Event()
        load = asyncio.ensure_future(traffic(models, stop))
        await asyncio.sleep(0.2)
        write_rgb(tmp_path, versions=(2,))  # export --version 2
        await models.poll()
        assert states(models) == {1: ModelState.UNAVAILABLE, 2: ModelState.READY}
        await asyncio.sleep(0.2)
        stop.set()
        outcomes = await load
        await models.stop()
        return outcomes

    outcomes = asyncio.run(main())
    errors = [o for o in outcomes if isinstance(o, Exception)]
    versions = [o.version for o in outcomes if not isinstance(o, Exception)]
    assert not errors, errors[:3]
    assert versions[0] == 1 and versions[-1] == 2 and versions.count(2) > 32
    # The tiny model's version N scales its weights by N: the answers are the new version's.
    np.testing.assert_allclose(outcomes[-1].output, 2 * outcomes[0].output, rtol=1e-5)


def test_a_corrupt_version_leaves_the_old_one_serving_and_says_why(tmp_path):
    folder = write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="poll", poll_interval_s=3600)
        write_rgb(tmp_path, versions=(2,))
        (folder / "2" / MODEL_FILE).write_bytes(b"not an onnx model")
        await models.poll()
        assert states(models) == {1: ModelState.READY, 2: ModelState.FAILED}
        reason = models.statuses()["tiny_rgb"].version_status(2).reason
        assert "sha256" in reason
        assert failures(models) == 1
        assert (await classify(models)).version == 1
        await models.poll()  # the same broken files are not tried again
        assert failures(models) == 1
        write_rgb(tmp_path, versions=(2,))  # mended
        await models.poll()
        assert states(models) == {1: ModelState.UNAVAILABLE, 2: ModelState.READY}
        assert (await classify(models)).version == 2
        await models.stop()

    asyncio.run(main())


def test_a_version_whose_graph_does_not_load_fails_with_onnx_runtimes_reason(tmp_path):
    folder = write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="explicit", models=["tiny_rgb"])
        write_rgb(tmp_path, versions=(2,))
        config = (folder / "config.json").read_text()
        (folder / "config.json").write_text(config.replace('"name": "input"', '"name": "pixels"'))
        with pytest.raises(ModelLoadFailed, match="version 2"):
            await models.load("tiny_rgb")
        assert states(models) == {1: ModelState.READY, 2: ModelState.FAILED}
        assert (await classify(models)).version == 1
        await models.stop()

    asyncio.run(main())


def test_removing_the_new_version_rolls_back(tmp_path):
    folder = write_rgb(tmp_path, versions=(1, 2))

    async def main():
        models = await started(tmp_path, model_control="poll", poll_interval_s=3600)
        assert (await classify(models)).version == 2
        shutil.rmtree(folder / "2")
        await models.poll()
        assert states(models) == {1: ModelState.READY, 2: ModelState.UNAVAILABLE}
        assert "removed from the repository" in models.statuses()["tiny_rgb"].version_status(2).reason
        assert (await classify(models)).version == 1
        await models.stop()

    asyncio.run(main())


def test_unloading_answers_every_queued_request_then_refuses(tmp_path):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="explicit", models=["tiny_rgb"], max_queue_delay_ms=60_000)
        queued = [asyncio.ensure_future(classify(models)) for _ in range(5)]  # wait for a batch of 8
        await asyncio.sleep(0.1)
        assert not any(q.done() for q in queued)
        await models.unload("tiny_rgb")
        results = await asyncio.gather(*queued)
        assert [r.batch_size for r in results] == [5] * 5
        status = models.statuses()["tiny_rgb"]
        assert (status.state, status.reason) == (ModelState.UNAVAILABLE, "unloaded")
        assert status.versions[0].sessions == 0
        with pytest.raises(ModelNotReady, match="unavailable: unloaded"):
            await classify(models)
        await models.load("tiny_rgb")
        assert states(models) == {1: ModelState.READY}
        await models.stop()

    asyncio.run(main())


def test_explicit_control_loads_only_on_request(tmp_path):
    write_rgb(tmp_path)
    write_gray(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="explicit")
        assert {n: s.state for n, s in models.statuses().items()} == {
            "tiny_gray": ModelState.UNAVAILABLE,
            "tiny_rgb": ModelState.UNAVAILABLE,
        }
        await models.load("tiny_rgb")
        assert models.statuses()["tiny_rgb"].state is ModelState.READY
        assert models.statuses()["tiny_gray"].state is ModelState.UNAVAILABLE
        for name in ("absent", "../tiny_rgb", ".hidden"):
            with pytest.raises(ModelNotFound):
                await models.load(name)
        await models.stop()

    asyncio.run(main())


def test_a_policy_of_two_serves_both_and_a_request_may_name_either(tmp_path):
    write_rgb(tmp_path, versions=(1, 2, 3))

    async def main():
        models = await started(tmp_path, version_policy="latest:2")
        assert states(models) == {2: ModelState.READY, 3: ModelState.READY}
        assert [(await classify(models, version=v)).version for v in (None, 2, 3)] == [3, 2, 3]
        with pytest.raises(ModelNotFound, match="no version 1"):
            await classify(models, version=1)
        await models.stop()

    asyncio.run(main())


def test_the_index_shows_what_each_loaded_version_holds(tmp_path):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, instances=2)
        (version,) = models.statuses()["tiny_rgb"].versions
        size = (tmp_path / "tiny_rgb" / "1" / MODEL_FILE).stat().st_size
        assert version.sessions == 2 and version.weights_bytes == 2 * size
        models.refresh_gauges()
        assert models.metrics.version_sessions.labels("tiny_rgb", "1")._value.get() == 2
        await models.stop()

    asyncio.run(main())


def test_a_model_that_appears_and_fails_while_serving_keeps_the_replica_ready(tmp_path):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="poll", poll_interval_s=3600)
        (tmp_path / "incoming").mkdir()  # export has made the folder, not yet its config.json
        await models.poll()
        assert "incoming" not in models.statuses() and failures(models, "incoming") == 0
        (tmp_path / "incoming" / "config.json").write_text("{}")
        await models.poll()
        assert models.statuses()["incoming"].state is ModelState.FAILED
        assert all_ready(models.statuses())
        await models.stop()

    asyncio.run(main())


def test_a_load_goes_on_when_its_caller_leaves(tmp_path):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, model_control="explicit")
        caller = asyncio.ensure_future(models.load("tiny_rgb"))
        await asyncio.sleep(0.01)
        caller.cancel()  # a client that went away, a gRPC deadline
        while models.statuses()["tiny_rgb"].state is not ModelState.READY:
            await asyncio.sleep(0.01)
        assert (await classify(models)).version == 1
        await models.stop()

    asyncio.run(main())


def test_a_request_that_cannot_be_queued_gives_its_hold_back(tmp_path, monkeypatch):
    write_rgb(tmp_path)

    async def main():
        models = await started(tmp_path, latency_slo_ms=1000)
        status = await models.ready("tiny_rgb")
        reservation = await models.reserve(status, 3)
        batcher = models.resolve("tiny_rgb").batcher
        assert batcher.held == 3

        def changed(*args):
            raise ModelNotReady("model 'tiny_rgb' changed its input or classes while the request ran")

        monkeypatch.setattr(models, "loaded_for", changed)
        with pytest.raises(ModelNotReady):
            reservation.submit([IMAGE] * 3, time.monotonic() + 10)
        reservation.release()
        assert batcher.held == 0
        await models.stop()

    asyncio.run(main())
