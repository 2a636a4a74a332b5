import sys

import pytest


def pytest_collection_finish(session):
    """Importing locust monkey-patches threads and sockets with gevent for the whole process, and the
    service tests then hang: locust runs only in subprocesses (tests/loadtest/test_locustfile.py)."""
    if "locust" in sys.modules:
        raise pytest.UsageError("a test module imported locust into the pytest process; run it in a subprocess")
