import service.__main__ as main_module


def test_flags_override_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVE_PORT", "9000")
    monkeypatch.setenv("SERVE_HOST", "127.0.0.1")
    calls = {}
    monkeypatch.setattr(main_module.uvicorn, "run", lambda app, **kwargs: calls.update(app=app, **kwargs))
    main_module.main(["--port", "8123", "--model-repository", str(tmp_path)])
    assert calls["port"] == 8123 and calls["host"] == "127.0.0.1"
    assert calls["app"].title == "cnn-serve"
    assert calls["access_log"] is False  # a log line per request is opt-in


def test_access_log_is_a_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVE_ACCESS_LOG", "true")
    calls = {}
    monkeypatch.setattr(main_module.uvicorn, "run", lambda app, **kwargs: calls.update(kwargs))
    main_module.main(["--model-repository", str(tmp_path)])
    assert calls["access_log"] is True
