import csv

import pytest

from loadtest.figures import ServerFigures


def test_rows_summarize_each_model():
    figures = ServerFigures()
    for batch, queue in [(1, 10.0), (4, 20.0), (4, 30.0), (8, 40.0)]:
        figures.add("resnet50", batch, queue)
    figures.add("lenet5", 2, 1.0)
    lenet, resnet = figures.rows()
    assert lenet == {
        "model": "lenet5",
        "answers": 1,
        "mean_batch": 2.0,
        "p95_batch": 2.0,
        "p50_queue_ms": 1.0,
        "p95_queue_ms": 1.0,
        "p99_queue_ms": 1.0,
    }
    assert resnet["answers"] == 4 and resnet["mean_batch"] == 4.25
    assert resnet["p50_queue_ms"] == pytest.approx(25.0) and resnet["p99_queue_ms"] == pytest.approx(39.7)


def test_workers_drain_and_the_master_merges():
    """Distributed Locust: each worker sends what it gathered since its last report; the master adds it up."""
    master, worker = ServerFigures(), ServerFigures()
    worker.add("resnet50", 8, 100.0)
    master.merge(worker.drain())
    assert worker.rows() == []  # drained: nothing is sent twice
    worker.add("resnet50", 16, 300.0)
    master.merge(worker.drain())
    (row,) = master.rows()
    assert row["answers"] == 2 and row["mean_batch"] == 12.0 and row["p50_queue_ms"] == 200.0


def test_writes_a_csv(tmp_path):
    figures = ServerFigures()
    figures.add("resnet50", 4, 12.5)
    figures.write(str(tmp_path / "run_server.csv"))
    with open(tmp_path / "run_server.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["model"] == "resnet50" and float(row["mean_batch"]) == 4.0 and float(row["p50_queue_ms"]) == 12.5
