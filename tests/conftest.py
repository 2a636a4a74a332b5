import os
import sys

import pytest

# Apps built in the test process serve no gRPC unless a test asks for a port: two would both want 8001.
# Services started as processes (loadtest/server.py) get a free port of their own.
os.environ["SERVE_GRPC_PORT"] = "0"


def pytest_collection_finish(session):
    """Importing locust monkey-patches threads and sockets with gevent for the whole process, and the
    service tests then hang: locust runs only in subprocesses (tests/loadtest/test_locustfile.py)."""
    if "locust" in sys.modules:
        raise pytest.UsageError("a test module imported locust into the pytest process; run it in a subprocess")
