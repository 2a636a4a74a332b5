"""startup.py end to end on a tiny repository: real starts, their phases, and the cache it empties."""

import json

from loadtest import startup
from service.metrics import Metrics
from tests.service.conftest import write_rgb


def test_load_seconds_sums_the_models_by_phase():
    metrics = Metrics()
    for model, session, warmup in (("a", 1.5, 2.0), ("b", 0.5, 0.25)):
        metrics.load_time.labels(model, "session").set(session)
        metrics.load_time.labels(model, "warmup").set(warmup)
    metrics.batch_size.labels("a").observe(4)  # other metrics are ignored
    assert startup.load_seconds(metrics.render().decode()) == {"session": 2.0, "warmup": 2.25}


def test_markdown_attributes_the_rest_to_the_process():
    starts = [
        {"ready_s": 10.0, "session_s": 6.0, "warmup_s": 3.0, "providers": ["TensorrtExecutionProvider"]},
        {"ready_s": 2.5, "session_s": 0.5, "warmup_s": 1.0, "providers": ["TensorrtExecutionProvider"]},
    ]
    cold, restart = startup.markdown(starts).splitlines()[2:]
    assert cold.split(" | ")[:6] == ["| cold", "emptied", "10.00", "6.00", "3.00", "1.00"]
    assert restart.split(" | ")[:6] == ["| restart 1", "kept", "2.50", "0.50", "1.00", "1.00"]


def test_startup_times_real_starts_and_empties_the_engine_cache_first(tmp_path, capsys):
    write_rgb(tmp_path / "repository")
    cache = tmp_path / "trt_cache"
    cache.mkdir()
    (cache / "stale.engine").write_bytes(b"from another model")
    output = tmp_path / "startup.json"
    args = ["--model", "tiny_rgb", "--repository", str(tmp_path / "repository"), "--restarts", "1"]
    startup.main([*args, "--cache-dir", str(cache), "--output", str(output)])
    report = json.loads(output.read_text())
    assert report["model"] == "tiny_rgb" and len(report["starts"]) == 2
    for start in report["starts"]:
        assert start["providers"] == ["CPUExecutionProvider"]
        assert 0 < start["session_s"] + start["warmup_s"] < start["ready_s"]
    assert not (cache / "stale.engine").exists()
    assert "| restart 1 | kept |" in capsys.readouterr().out
