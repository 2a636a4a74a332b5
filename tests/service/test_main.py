import uvicorn

import service.__main__ as main_module
from service.frontend.http_server import GuardedHttpProtocol


def capture_config(monkeypatch) -> dict:
    """Stands in for uvicorn.Server.run: keeps the Config that `python -m service` would serve with."""
    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: seen.update(config=server.config))
    monkeypatch.setattr(main_module, "tune_process", dict)  # process-wide: not in the test process
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
