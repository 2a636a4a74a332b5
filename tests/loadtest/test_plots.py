import csv
import math
import subprocess
import sys

import pytest
from PIL import Image

from loadtest.plots import main, plot, read_history


def locust_percentile_columns() -> list[str]:
    """Locust's own names, so a change in its CSV format fails here rather than in `make loadtest`. Asked in a
    subprocess: importing locust monkey-patches the whole test process with gevent."""
    code = "from locust.stats import *; print(*get_readable_percentiles(PERCENTILES_TO_REPORT), sep='\\n')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return out.split()


HEADER = ["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s", *locust_percentile_columns()]
HEADER += ["Total Request Count", "Total Failure Count", "Total Median Response Time"]


def row(timestamp, users, kind, name, rps, fails, p50, p95, p99):
    values = dict.fromkeys(HEADER, "0")
    values.update({"Timestamp": timestamp, "User Count": users, "Type": kind, "Name": name, "Requests/s": rps})
    values.update({"Failures/s": fails, "50%": p50, "95%": p95, "99%": p99})
    return values


@pytest.fixture
def history_csv(tmp_path):
    path = tmp_path / "locust_stats_history.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, HEADER)
        writer.writeheader()
        writer.writerow(row(1000, 2, "", "Aggregated", "0.000000", "0.000000", "N/A", "N/A", "N/A"))
        writer.writerow(row(1001, 4, "POST", "resnet50", "9.0", "0.5", "30", "40", "50"))
        writer.writerow(row(1001, 4, "GET", "/metrics", "9.0", "0.0", "8", "8", "8"))  # not a classify request
        writer.writerow(row(1001, 4, "", "Aggregated", "18.0", "0.5", "8", "40", "50"))
        writer.writerow(row(1003, 8, "POST", "resnet50", "12.0", "0.0", "35", "80", "120"))
        writer.writerow(row(1003, 8, "SHED", "resnet50", "3.0", "0.0", "1", "2", "2"))
        writer.writerow(row(1003, 8, "", "Aggregated", "27.0", "0.0", "9", "80", "120"))
    return path


def test_reads_each_request_series_on_the_aggregated_ticks(history_csv):
    history = read_history(history_csv)
    assert history["seconds"] == [0, 1, 3] and history["users"] == [2, 4, 8]
    assert set(history["series"]) == {"POST resnet50", "SHED resnet50"}
    post = history["series"]["POST resnet50"]
    assert math.isnan(post["requests_per_s"][0])  # no row for it at the first tick
    assert post["requests_per_s"][1:] == [9.0, 12.0] and post["failures_per_s"][1:] == [0.5, 0.0]
    assert post["p50_ms"][1:] == [30, 35] and post["p95_ms"][1:] == [40, 80] and post["p99_ms"][2] == 120
    shed = history["series"]["SHED resnet50"]["requests_per_s"]
    assert math.isnan(shed[1]) and shed[2] == 3.0


def test_a_history_without_aggregated_rows_is_an_error(tmp_path):
    path = tmp_path / "empty_stats_history.csv"
    path.write_text(",".join(HEADER) + "\n")
    with pytest.raises(ValueError, match="no Aggregated rows"):
        read_history(path)


def test_writes_both_plots_as_png(history_csv, tmp_path):
    paths = plot(read_history(history_csv), tmp_path, title="run")
    assert [p.name for p in paths] == ["throughput.png", "latency.png"]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (900, 450)


def test_command_line_takes_the_csv_prefix(history_csv, capsys):
    main([str(history_csv.parent / "locust")])
    assert (history_csv.parent / "latency.png").is_file()
    assert "throughput.png" in capsys.readouterr().out
