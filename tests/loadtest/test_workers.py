import pytest

from loadtest.workers import parse_wrk, summary

WRK = """Running 10s test @ http://127.0.0.1:8000/v1/classify?model=lenet5
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   20.01ms 200.00ms   70.00%
  Latency Distribution
     50%   26.60ms
     75%   40.00ms
     90%   60.00ms
     99%    1.20s
  22022 requests in 10.00s, 9.00MB read
  Non-2xx or 3xx responses: 12
Requests/sec:   2202.20
Transfer/sec:      0.90MB
"""


def test_wrk_reports_are_read_with_their_units():
    assert parse_wrk(WRK) == {"requests_per_s": 2202.2, "p50_ms": 26.6, "p99_ms": 1200.0, "non_2xx": 12}
    assert parse_wrk(WRK.replace("  Non-2xx or 3xx responses: 12\n", ""))["non_2xx"] == 0
    assert parse_wrk(WRK.replace("26.60ms", "900.00us"))["p50_ms"] == pytest.approx(0.9)


def test_summary_shows_each_repeat_and_averages_the_rest():
    point = {
        "workers": 2,
        "model": "lenet5",
        "connections": 64,
        "p50_ms": 20.0,
        "p99_ms": 80.0,
        "non_2xx": 1,
        "frontends_core_ms_per_request": 0.7,
        "engine_core_ms_per_request": 0.2,
        "load_generator_cpu_pct": 7.0,
    }
    report = {"points": [{**point, "requests_per_s": 2000.0}, {**point, "requests_per_s": 2400.0, "p50_ms": 30.0}]}
    row = summary(report).splitlines()[-1]
    assert row == "| 2 | lenet5 | 64 | 2,000 / 2,400 | 25.0 | 80.0 | 2 | 0.70 | 0.20 | 7 |"
