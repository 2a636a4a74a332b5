"""bench.py end to end on a tiny repository with the --quick budget: the report's shape, not its speed."""

import json
import math

import pytest

from loadtest import bench
from tests.service.conftest import write_rgb

LATENCIES = ("p50_ms", "p95_ms", "p99_ms")
CONCURRENCY = [1, 2, 16]  # asked for as "16,1,2,16": sorted, once each


def numbers(value, path="report"):
    """Every number in a JSON tree, with where it is."""
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_rgb(root / "repository")
    output = root / "out" / "bench.json"
    args = ["--model", "tiny_rgb", "--repository", str(root / "repository"), "--output", str(output), "--quick"]
    bench.main([*args, "--concurrency", "16,1,2,16"])
    return json.loads(output.read_text())


def test_every_number_is_finite_and_non_negative(report):
    bad = [(path, v) for path, v in numbers(report) if not math.isfinite(v) or v < 0]
    assert not bad


def test_raw_engine_covers_powers_of_two_up_to_the_max_batch(report):
    assert report["budget"]["max_batch_size"] == 8
    assert [p["batch_size"] for p in report["raw"]] == [1, 2, 4, 8]
    for point in report["raw"]:
        assert point["images_per_s"] > 0 and point["runs"] >= 3
        assert all(point[k] > 0 for k in LATENCIES)
        assert point["p50_ms"] <= point["p95_ms"] <= point["p99_ms"]
    assert report["raw_best"]["images_per_s"] == max(p["images_per_s"] for p in report["raw"])


@pytest.mark.parametrize("mode", ["batched", "unbatched"])
def test_service_points(report, mode):
    service = report["service"][mode]
    assert [p["concurrency"] for p in service["points"]] == CONCURRENCY
    assert service["batching"]["max_batch_size"] == (8 if mode == "batched" else 1)
    for point in service["points"]:
        assert point["requests"] > 0 and point["images_per_s"] > 0
        assert all(point[k] > 0 for k in LATENCIES)
        assert 1 <= point["mean_batch_size"] <= service["batching"]["max_batch_size"]
        assert point["loadgen_cpu_cores"] > 0 and point["ratio_over_raw_best"] > 0
        if mode == "batched":
            assert point["ratio_over_unbatched"] > 0


def test_top_level_ratio_and_machine(report):
    at_16 = next(p for p in report["service"]["batched"]["points"] if p["concurrency"] == 16)
    assert report["ratio_service_over_raw"] == at_16["ratio_over_raw_best"] > 0
    machine = report["machine"]
    assert machine["cores"] >= 1 and machine["cpu"]
    assert machine["provider"].endswith("ExecutionProvider")
    assert machine["precision"] == "fp32"
    assert report["model"] == "tiny_rgb" and report["weights"] == "random"


def test_markdown_table_has_a_row_per_point(report):
    table = bench.markdown(report).splitlines()
    assert len(table) == 2 + len(report["raw"]) + 2 * len(CONCURRENCY)
    assert all(row.startswith("|") and row.endswith("|") for row in table)
    assert len({row.count("|") for row in table}) == 1  # every row has every column


def test_the_best_raw_batch_is_rechecked_after_the_service(report):
    assert report["raw_recheck"]["batch_size"] == report["raw_best"]["batch_size"]
    assert report["raw_drift"] == pytest.approx(
        report["raw_recheck"]["images_per_s"] / report["raw_best"]["images_per_s"]
    )


def test_latency_at_one_client_is_compared_with_raw_batch_one_plus_decoding(report):
    assert report["decode_ms"] > 0
    one = next(p for p in report["service"]["batched"]["points"] if p["concurrency"] == 1)
    raw_one = next(p for p in report["raw"] if p["batch_size"] == 1)
    assert report["latency_ratio_at_1"] == pytest.approx((one["p50_ms"] - report["decode_ms"]) / raw_one["p50_ms"])


def test_recommended_max_batch_is_the_smallest_near_the_best(report):
    recommended = report["recommended_max_batch_size"]
    by_size = {p["batch_size"]: p["images_per_s"] for p in report["raw"]}
    best = max(by_size.values())
    assert by_size[recommended] >= bench.WITHIN_BEST * best
    assert all(rate < bench.WITHIN_BEST * best for size, rate in by_size.items() if size < recommended)


def test_recommendation_on_known_curves():
    flat = [{"batch_size": n, "images_per_s": r} for n, r in [(1, 20.2), (2, 19.5), (4, 18.8), (8, 17.1)]]
    rising = [{"batch_size": n, "images_per_s": r} for n, r in [(1, 6000), (2, 8500), (4, 15000), (8, 19700)]]
    assert bench.recommended_max_batch(flat) == 1
    assert bench.recommended_max_batch(rising) == 8


@pytest.mark.parametrize("concurrency", ["1,4,64", "16,64"])
def test_concurrency_must_include_the_points_the_ratios_use(tmp_path, capsys, concurrency):
    with pytest.raises(SystemExit):
        bench.main(["--model", "m", "--output", str(tmp_path / "o.json"), "--concurrency", concurrency])
    assert "must include 1 and 16" in capsys.readouterr().err
