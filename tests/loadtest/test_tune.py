import json

import httpx
import pytest

from export.to_onnx import main as export
from export.weights import RandomWeightsWarning
from loadtest.images import write_samples
from loadtest.server import running_service
from loadtest.tune import instance_counts, main, recommend, service_overrides, table, verify_table
from modelrepo.read import load_source
from modelrepo.schema import Batching, ModelConfig, TuningPoint
from service.config import Settings
from service.engine.instances import this_machine
from service.engine.loader import effective_batching


def point(batch: int, instances: int, images_per_s: float, p99_ms: float) -> TuningPoint:
    return TuningPoint(
        batch_size=batch,
        instances=instances,
        intra_op_threads=1,
        images_per_s=images_per_s,
        p50_ms=p99_ms,
        p99_ms=p99_ms,
    )


def test_where_batching_does_not_pay_batch_1_is_recommended():
    flat = [point(1, 1, 20.0, 50), point(2, 1, 20.5, 100), point(4, 1, 20.8, 200)]
    assert recommend(flat, objective_ms=1000) == (flat[0], True)


def test_the_largest_paying_batch_within_half_the_objective():
    rising = [point(1, 1, 100, 10), point(4, 1, 300, 13), point(16, 1, 600, 27), point(32, 1, 610, 52)]
    assert recommend(rising, objective_ms=200) == (rising[2], True)  # 32 brings under 1/0.95 more than 16
    assert recommend(rising, objective_ms=40) == (rising[1], True)  # a batch may take 20 ms: 16 does not fit


def test_more_sessions_when_they_pay_and_the_fewest_that_do():
    points = [point(8, 1, 100, 80), point(8, 2, 180, 89), point(8, 4, 182, 176)]
    assert recommend(points, objective_ms=250) == (points[1], True)
    # Two sessions make each batch slower: an objective that leaves a batch 85 ms keeps one.
    assert recommend(points, objective_ms=170) == (points[0], True)


def test_when_nothing_fits_the_quickest_batch_and_says_so():
    points = [point(1, 1, 10, 300), point(1, 2, 15, 450), point(2, 1, 11, 600)]
    assert recommend(points, objective_ms=100) == (points[0], False)
    assert "**<- recommended**" in table(points, 100, points[0]).splitlines()[2]


def test_the_recommendation_as_service_settings_is_what_write_records():
    chosen = point(8, 2, 100, 40)
    env = service_overrides(chosen, 120)
    assert env == {
        "SERVE_MAX_BATCH_SIZE": "8",
        "SERVE_INSTANCES": "2",
        "SERVE_INTRA_OP_THREADS": "0",
        "SERVE_LATENCY_SLO_MS": "120",
    }
    settings = Settings(**{k.removeprefix("SERVE_").lower(): v for k, v in env.items()})
    assert effective_batching(Batching(), settings).model_dump(include={"max_batch_size", "instances"}) == {
        "max_batch_size": 8,
        "instances": 2,
    }


def test_verify_table():
    results = {
        "as configured": {"answered_per_s": 20.0, "answered_p50_ms": 200, "answered_p99_ms": 300, "refused_per_s": 9},
        "recommended": {"answered_per_s": 25.5, "refused_per_s": 0.0},  # nothing answered: no percentiles
    }
    rows = verify_table(results, 250).splitlines()
    assert "objective 250 ms" in rows[0]
    assert rows[2:] == ["| as configured | 20.0 | 200.0 | 300.0 | 9.0 |", "| recommended | 25.5 | 0.0 | 0.0 | 0.0 |"]


def test_nothing_is_written_when_no_configuration_meets_the_objective(tmp_path, capsys):
    repo = tmp_path / "repo"
    with pytest.warns(RandomWeightsWarning):
        export(["--model", "lenet5", "--weights", "random", "--output", str(repo)])
    before = (repo / "lenet5" / "config.json").read_bytes()
    args = [
        "--model",
        "lenet5",
        "--repository",
        str(repo),
        "--seconds",
        "0.01",
        "--batch-sizes",
        "1",
        "--instances",
        "1",
    ]
    assert main([*args, "--objective-ms", "0.0001", "--write"]) == 1
    assert "not written" in capsys.readouterr().out
    assert (repo / "lenet5" / "config.json").read_bytes() == before


def test_instance_counts():
    assert instance_counts(2, on_gpu=False) == [1, 2]
    assert instance_counts(6, on_gpu=False) == [1, 2, 4, 6]
    assert instance_counts(16, on_gpu=True) == [1, 2]


@pytest.mark.parametrize("layout", ["one process", "workers"])
def test_tune_write_on_lenet5_writes_a_config_the_service_uses(tmp_path, capsys, layout):
    repo = tmp_path / "repo"
    with pytest.warns(RandomWeightsWarning):
        export(["--model", "lenet5", "--weights", "random", "--output", str(repo)])
    before = load_source(repo, "lenet5").config
    args = ["--model", "lenet5", "--repository", str(repo), "--seconds", "0.05", "--batch-sizes", "1,8"]
    assert main([*args, "--instances", "1,2", "--objective-ms", "120", "--write"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("| yes") + printed.count("| no") == 4 and "recommended" in printed

    config = ModelConfig.model_validate_json((repo / "lenet5" / "config.json").read_text())
    tuning = config.tuning
    assert tuning.machine == this_machine() and tuning.latency_slo_ms == 120
    assert {(p.batch_size, p.instances) for p in tuning.points} == {(1, 1), (8, 1), (1, 2), (8, 2)}
    chosen, _ = recommend(list(tuning.points), 120)
    assert config.batching.max_batch_size == chosen.batch_size and config.batching.latency_slo_ms == 120
    assert config.instances.count == chosen.instances and config.instances.intra_op_threads == 0
    assert (tuning.version, tuning.sha256) == (1, before.versions[1].sha256)
    assert config.versions == before.versions and config.card == before.card  # nothing else changed

    digit = write_samples(tmp_path / "samples")[-1].read_bytes()  # scikit-learn's handwritten 8, as a PNG

    # The service runs what was written: an environment override shows it reads the same field.
    for env, sessions in (({}, chosen.instances), ({"SERVE_INSTANCES": "3"}, 3)):
        env = {"SERVE_WORKERS": "2" if layout == "workers" else "1", "SERVE_GRPC_PORT": "0", **env}
        with running_service(repo, ["lenet5"], env=env, timeout=120) as (url, _):
            info = httpx.get(f"{url}/v1/models/lenet5", timeout=10).json()
            batching = info["batching"]
            assert batching["instances"] == batching["batches_in_flight"] == sessions
            assert batching["max_batch_size"] == chosen.batch_size and batching["latency_slo_ms"] == 120
            answers = [httpx.post(f"{url}/v1/classify?model=lenet5", content=digit, timeout=10) for _ in range(4)]
            assert [a.status_code for a in answers] == [200] * len(answers), json.dumps(answers[0].json())
