"""The figures the service reports in each answer (batch size, queue time), gathered per model by the
locustfile apart from Locust's request statistics, which would count them as requests. No locust import
here: it monkey-patches the process with gevent."""

import csv
from collections import defaultdict

import numpy as np


class ServerFigures:
    """Batch size and queue time per model, as the server reported them in each answer."""

    COLUMNS = ("model", "answers", "mean_batch", "p95_batch", "p50_queue_ms", "p95_queue_ms", "p99_queue_ms")

    def __init__(self) -> None:
        self.figures = self._empty()

    @staticmethod
    def _empty() -> dict[str, dict[str, list[float]]]:
        return defaultdict(lambda: {"batch": [], "queue_ms": []})

    def add(self, model: str, batch_size: int, queue_ms: float) -> None:
        self.figures[model]["batch"].append(batch_size)
        self.figures[model]["queue_ms"].append(queue_ms)

    def drain(self) -> dict[str, dict[str, list[float]]]:
        """What a worker sends the master: everything since its last report."""
        figures, self.figures = dict(self.figures), self._empty()
        return figures

    def merge(self, figures: dict[str, dict[str, list[float]]]) -> None:
        for model, values in figures.items():
            for key, numbers in values.items():
                self.figures[model][key].extend(numbers)

    def rows(self) -> list[dict]:
        rows = []
        for model, values in sorted(self.figures.items()):
            batch, queue = np.asarray(values["batch"], float), np.asarray(values["queue_ms"], float)
            if not len(batch):
                continue
            p50, p95, p99 = np.percentile(queue, [50, 95, 99])
            mean_batch, p95_batch = batch.mean(), np.percentile(batch, 95)
            rows.append(dict(zip(self.COLUMNS, (model, len(batch), mean_batch, p95_batch, p50, p95, p99), strict=True)))
        return rows

    def write(self, path: str) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows())
