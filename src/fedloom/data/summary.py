"""Summaries and reports of a partition: statistics, a text table, and a run-folder report (JSON, CSV, PNG).

Heterogeneity is measured by the total variation distance between each client's label distribution p_i and the
global label distribution p of all partitioned samples: TV_i = 0.5 * sum_c |p_i[c] - p[c]|, in [0, 1]. Over
unordered labels with the 0-1 ground metric this equals the earth mover's distance. We report the unweighted
mean over clients (0 = every client has the global mix, near 1 = clients hold disjoint classes).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from fedloom.data.federated import FederatedData



def label_tv_distances(counts: np.ndarray) -> np.ndarray:
    """Per-client total variation distance of label distributions (rows of ``counts``) to the pooled one."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts))
    glob = counts.sum(axis=0) / total
    sizes = counts.sum(axis=1, keepdims=True)
    local = np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    return 0.5 * np.abs(local - glob).sum(axis=1)


def partition_summary(fd: FederatedData) -> dict[str, Any]:
    """Sizes, label counts and heterogeneity statistics of a partition (JSON-serializable)."""
    counts = fd.label_counts("all")
    sizes = counts.sum(axis=1)
    return {
        "dataset": fd.dataset.name,
        "num_clients": fd.num_clients,
        "num_classes": fd.num_classes,
        "dataset_size": len(fd.dataset),
        "total_samples": int(sizes.sum()),
        "train_sizes": fd.train_sizes().tolist(),
        "test_sizes": fd.test_sizes().tolist(),
        "label_counts": counts.tolist(),
        "client_size_mean": float(sizes.mean()),
        "client_size_std": float(sizes.std()),
        "client_size_min": int(sizes.min()),
        "client_size_max": int(sizes.max()),
        "mean_classes_per_client": float((counts > 0).sum(axis=1).mean()),
        "mean_label_tv_distance": float(label_tv_distances(counts).mean()),
    }


def class_labels(fd: FederatedData) -> list[str]:
    names = fd.dataset.class_names
    return list(names) if names and len(names) == fd.num_classes else [str(c) for c in range(fd.num_classes)]


def format_table(fd: FederatedData) -> str:
    """A per-client table (client, train, test, label counts per class) with a header and a summary line."""
    counts = fd.label_counts("all")
    rows = [[str(i), str(tr), str(te)] + [str(v) for v in row]
            for i, (tr, te, row) in enumerate(zip(fd.train_sizes(), fd.test_sizes(), counts))]  # fmt: skip
    total = [["total", str(fd.train_sizes().sum()), str(fd.test_sizes().sum())] + [str(v) for v in counts.sum(0)]]
    header = ["client", "train", "test"] + [str(c) for c in range(fd.num_classes)]
    widths = [max(len(r[j]) for r in [header] + rows + total) for j in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    s = partition_summary(fd)
    out = [
        f"{fd.dataset.name}: {fd.num_clients} clients, partition {_describe(fd)}, train_ratio {fd.train_ratio}",
        *_legend(fd),
        line(header), *[line(r) for r in rows], line(total[0]),
        f"client size {s['client_size_mean']:.1f} ± {s['client_size_std']:.1f} "
        f"(min {s['client_size_min']}, max {s['client_size_max']}); classes/client "
        f"{s['mean_classes_per_client']:.2f}; mean label TV distance {s['mean_label_tv_distance']:.3f}; "
        f"hash {fd.partition_hash[:12]}",
    ]  # fmt: skip
    return "\n".join(out)


def _legend(fd: FederatedData) -> list[str]:
    names = class_labels(fd)
    if names == [str(c) for c in range(fd.num_classes)]:
        return []
    return ["classes: " + ", ".join(f"{c}={n}" for c, n in enumerate(names))]


def _describe(fd: FederatedData) -> str:
    p = fd.partition
    detail = {"dirichlet": f"alpha={p.alpha}", "pathological": f"classes_per_client={p.classes_per_client}, "
              f"balanced={p.balanced}"}.get(p.name, "")  # fmt: skip
    return f"{p.name}({detail}, seed={p.seed})" if detail else f"{p.name}(seed={p.seed})"


def write_partition_report(fd: FederatedData, out_dir: Path) -> None:
    """Write partition.json (spec, hash, summary), label_counts.csv and partition.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": fd.dataset.name,
        "dataset_source": fd.dataset.source,
        "class_names": class_labels(fd),
        "partition": dataclasses.asdict(fd.partition),
        "train_ratio": fd.train_ratio,
        "partition_hash": fd.partition_hash,
        "summary": partition_summary(fd),
    }
    (out_dir / "partition.json").write_text(json.dumps(report, indent=1, default=str))
    _write_csv(fd, out_dir / "label_counts.csv")
    from fedloom.data.plot import plot_partition

    plot_partition(fd, out_dir / "partition.png")


def _write_csv(fd: FederatedData, path: Path) -> None:
    """One row per client: client, train, test, then the label counts (train + test) per class."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client", "train", "test"] + class_labels(fd))
        for i, (tr, te, row) in enumerate(zip(fd.train_sizes(), fd.test_sizes(), fd.label_counts("all"))):
            writer.writerow([i, int(tr), int(te)] + [int(v) for v in row])
