"""Load tests (Locust) and the engine-vs-service benchmark; figures, not tests."""
