"""Bytes per round of each method in the fmnist-htfl runs (mean over rounds 1..R of bytes_up and bytes_down,
per client: divided by the 20 clients), as a Markdown table. Usage:
    python docs/results/fmnist-htfl-bytes.py benchmarks/results/fmnist-htfl
"""

import json
import sys
from pathlib import Path


def main(root: str) -> None:
    rows = {}
    for metrics in sorted(Path(root).glob("*-s1-*/metrics.jsonl")):
        name = metrics.parent.name.split("-fashion-mnist")[0]
        lines = [json.loads(line) for line in metrics.read_text().splitlines()][1:]
        if not lines:
            continue
        up = sum(r["bytes_up"] for r in lines) / len(lines) / 20
        down = sum(r["bytes_down"] for r in lines) / len(lines) / 20
        rows[name] = (up, down)
    print("| method | up per client per round | down per client per round |")
    print("|---|---|---|")
    for name, (up, down) in sorted(rows.items(), key=lambda kv: kv[1][0]):
        print(f"| {name} | {up / 1024:,.1f} KiB | {down / 1024:,.1f} KiB |")


if __name__ == "__main__":
    main(sys.argv[1])
