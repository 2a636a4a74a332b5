"""attack.py end to end on a tiny repository with --quick (the report's shape and its verdicts, not speed),
and the hostile payloads it sends."""

import io
import json
import struct

import pytest
from PIL import Image

from loadtest import attack, hostile
from service.frontend.request_body import multipart_images
from tests.service.conftest import write_gray, write_rgb


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack")
    write_rgb(root / "repository")
    write_gray(root / "repository")
    output = root / "attack.json"
    args = ["--repository", str(root / "repository"), "--good-model", "tiny_gray", "--target", "tiny_rgb"]
    args += ["--attacker-nice", "0"]  # niceness is for good: not in the test process
    status = attack.main(
        [*args, "--quick", "--attack", "thin-png-6000", "--attack", "hang-ups", "--output", str(output)]
    )
    return status, json.loads(output.read_text())


def test_every_attack_is_reported_with_what_the_attackers_got(report):
    _, result = report
    rows = {row["attack"]: row for row in result["attacks"]}
    assert set(rows) == {"thin-png-6000", "hang-ups"}
    assert set(rows["thin-png-6000"]["statuses"]) == {"413"}
    assert set(rows["hang-ups"]["statuses"]) == {"hung up"}
    for row in rows.values():
        assert set(row["phases"]) == {"before", "during", "after"}
        assert row["phases"]["during"]["n"] > 0 and row["attacker_5xx"] == 0
    assert result["alive"] and result["warm_rss_mb"] > 0 and result["idle_rss_mb"] > 0


def test_the_exit_status_is_the_verdict(report):
    status, result = report
    assert status == (0 if result["passed"] else 1)
    assert result["passed"] == (result["alive"] and all(row["ok"] for row in result["attacks"]))


def test_the_catalogue_names_are_unique_and_listed(capsys):
    names = [a.name for a in attack.catalogue("resnet50")]
    assert len(names) == len(set(names)) and names[0] == "control"
    assert attack.main(["--list"]) == 0
    assert capsys.readouterr().out.split()[::1].count("thin-png-6000") == 1


def test_percentiles_per_window():
    records = [(float(t), t / 1000, 200) for t in range(1, 101)]  # latency t ms at time t
    window = attack.percentiles(records, 1, 101)
    assert window["n"] == 100 and window["p50"] == pytest.approx(50.5) and window["p99"] == pytest.approx(100)
    assert attack.percentiles(records, 200, 300) == {"n": 0, "p50": None, "p99": None, "failed": 0}


def test_a_504_is_not_a_server_error():
    tally = hostile.Tally.empty()
    tally.statuses.update({504: 3, 413: 2, "hung up": 1})
    assert tally.server_errors == 0
    tally.statuses[503] += 1
    assert tally.server_errors == 1


def test_payloads_are_what_they_claim():
    thin = hostile.png(1, 6000)
    assert len(thin) < 120 and Image.open(io.BytesIO(thin)).size == (1, 6000)
    bomb = hostile.png_text_bomb()
    assert len(bomb) < 80_000 and bomb.startswith(b"\x89PNG") and struct.unpack(">II", bomb[16:24]) == (8, 8)
    assert bomb.count(b"zTXt") == 70
    body, content_type = hostile.multipart(3, b"abc")
    assert multipart_images(body, content_type, 8) == [(f"image {i} (x.png)", b"abc") for i in range(3)]
    request = hostile.request_bytes("POST", "/x", {"Content-Length": "5"})
    assert request.count(b"Content-Length") == 1  # a slow body announces its own length
