import pytest
import uvicorn

import service.__main__ as main_module
from service.frontend.http_server import GuardedHttpProtocol


def capture_config(monkeypatch) -> dict:
    """Stands in for uvicorn.Server.run: keeps the Config that `python -m service` would serve with."""
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: seen.update(config=server.config))
    monkeypatch.setattr(main_module, "tune_process", dict)  # process-wide: not in the test process
    monkeypatch.setenv("SERVE_WORKERS", "1")  # these read the one-process layout's uvicorn Config
    return seen


def test_flags_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVE_PORT", "9000")
    monkeypatch.setenv("SERVE_HOST", "127.0.0.1")
    seen = capture_config(monkeypatch)
    main_module.main(["--port", "8123", "--model-repository", str(tmp_path)])
    config = seen["config"]
    assert config.port == 8123 and config.host == "127.0.0.1"
    assert config.app.title == "cnn-serve"
    assert config.access_log is False  # a log line per request is opt-in


def test_access_log_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVE_ACCESS_LOG", "true")
    seen = capture_config(monkeypatch)
    main_module.main(["--model-repository", str(tmp_path)])
    assert seen["config"].access_log is True


def test_serves_with_the_guarded_protocol_and_its_limits(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVE_MAX_HEADER_BYTES", "4096")
    monkeypatch.setenv("SERVE_KEEP_ALIVE_TIMEOUT_S", "2.5")
    seen = capture_config(monkeypatch)
    main_module.main(["--model-repository", str(tmp_path)])
    config = seen["config"]
    assert config.http.func is GuardedHttpProtocol
    assert config.http.keywords["limits"].max_header_bytes == 4096
    assert config.timeout_keep_alive == 2.5


def test_workers_follow_the_usable_cores_unless_set(monkeypatch, tmp_path):
    assert [main_module.workers_for(n) for n in (1, 2, 4, 16)] == [1, 2, 3, 15]
    started = []
    monkeypatch.setattr(main_module, "run_supervisor", lambda settings, workers: started.append(workers) or 0)
    monkeypatch.setattr(main_module, "usable_cores", lambda: 4)
    for flags in ([], ["--workers", "6"]):
        with pytest.raises(SystemExit) as exit_:
            main_module.main(["--model-repository", str(tmp_path), *flags])
        assert exit_.value.code == 0
    assert started == [3, 6]
    seen = capture_config(monkeypatch)  # SERVE_WORKERS=1: no supervisor, one uvicorn
    main_module.main(["--model-repository", str(tmp_path)])
    assert seen["config"].app.title == "cnn-serve" and started == [3, 6]
