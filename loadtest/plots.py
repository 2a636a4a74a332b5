"""PNG plots of a Locust run, from the `<prefix>_stats_history.csv` that `--csv <prefix> --csv-full-history`
writes: requests/s and failures/s, and p50/p95/p99 latency, per model over time, with the user count beside.

    python -m loadtest.plots loadtest/results/<timestamp>/locust     (what `make loadtest` runs)

One line per model and kind of request: `POST` (answered or failed) and `SHED` (429s), which Locust's
"Aggregated" row would add together.
"""

import csv
import math
import sys
from pathlib import Path

REQUEST_TYPES = ("POST", "SHED")
PERCENTILES = ("50%", "95%", "99%")
COLUMNS = {"Requests/s": "requests_per_s", "Failures/s": "failures_per_s"} | {p: f"p{p[:-1]}_ms" for p in PERCENTILES}


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # Locust writes "N/A" before the first answer


def read_history(path: Path) -> dict:
    """{"seconds": [...], "users": [...], "series": {"POST resnet50": {"requests_per_s": [...], ...}}}, one
    value per Locust tick (the "Aggregated" rows set the ticks); NaN where an entry had no row yet."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ticks = [row for row in rows if row["Name"] == "Aggregated"]
    if not ticks:
        raise ValueError(f"{path} has no Aggregated rows: did Locust run?")
    index = {int(row["Timestamp"]): i for i, row in enumerate(ticks)}
    series: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        if row["Type"] not in REQUEST_TYPES:
            continue
        columns = series.setdefault(
            f"{row['Type']} {row['Name']}", {key: [math.nan] * len(ticks) for key in COLUMNS.values()}
        )
        i = index[int(row["Timestamp"])]
        for column, key in COLUMNS.items():
            columns[key][i] = _number(row[column])
    start = int(ticks[0]["Timestamp"])
    return {
        "seconds": [int(row["Timestamp"]) - start for row in ticks],
        "users": [int(row["User Count"]) for row in ticks],
        "series": series,
    }


def plot(history: dict, out_dir: Path, title: str = "") -> list[Path]:
    """Writes throughput.png and latency.png into `out_dir`; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    t, series = history["seconds"], history["series"]
    posts = {name: s for name, s in series.items() if name.startswith("POST ")}
    panels = {
        "throughput": (
            "per second",
            [(f"{name} requests", s["requests_per_s"]) for name, s in series.items()]
            + [(f"{name} failures", s["failures_per_s"]) for name, s in posts.items()],
        ),
        "latency": (
            "latency (ms)",
            [(f"{name} p{p[:-1]}", s[f"p{p[:-1]}_ms"]) for name, s in posts.items() for p in PERCENTILES],
        ),
    }
    paths = []
    for panel, (ylabel, lines) in panels.items():
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for label, values in lines:
            ax.plot(t, values, label=label)
        ax.set(xlabel="seconds", ylabel=ylabel, title=f"{title} {panel}".strip())
        ax.set_ylim(bottom=0)
        users = ax.twinx()
        users.plot(t, history["users"], color="grey", linestyle="--", label="users")
        users.set(ylabel="users")
        users.set_ylim(bottom=0)
        handles = ax.get_legend_handles_labels()[0] + users.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc="upper left", fontsize="small")
        fig.tight_layout()
        path = out_dir / f"{panel}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m loadtest.plots CSV_PREFIX")
    prefix = Path(argv[0])
    history = read_history(prefix.with_name(f"{prefix.name}_stats_history.csv"))
    for path in plot(history, prefix.parent, title=prefix.parent.name):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
