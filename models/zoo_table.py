"""Write the zoo table (name, year, paper, parameters, GFLOPs, input) into README.md.

    python -m models.zoo_table          # rewrite the table between the README markers
    python -m models.zoo_table --check  # exit 1 if README is stale (CI runs this as a test)

Models are built on the meta device, so the whole zoo is counted in seconds.
FLOPs are torch.utils.flop_counter's: two per multiply-add, at the card's input size.
"""

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from models import get_card, get_model, list_models

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"


def zoo_rows() -> list[dict]:
    rows = []
    for name in list_models():
        card = get_card(name)
        with torch.device("meta"):
            model = get_model(name).eval()
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, *card.input_size))
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append({"card": card, "params": params, "gflops": counter.get_total_flops() / 1e9})
    return sorted(rows, key=lambda r: (r["card"].year, r["card"].name))


def markdown_table() -> str:
    lines = [
        "| model | year | paper | parameters | GFLOPs | input |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in zoo_rows():
        c = r["card"]
        lines.append(
            f"| `{c.name}` | {c.year} | {c.paper} | {r['params']:,} | {r['gflops']:.3g} | "
            f"{c.input_size[0]}x{c.input_size[1]}x{c.input_size[2]} |"
        )
    return "\n".join(lines)


def render(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{markdown_table()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md's table is out of date")
    args = parser.parse_args()
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md's zoo table is stale: run `python -m models.zoo_table`", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
