"""Summaries and reports of a partition: statistics, a text table, and a run-folder report (JSON, CSV, PNGs).

Label heterogeneity is the earth mover's distance (EMD) between each client's label distribution p_i and the
global label distribution p of all partitioned samples, under the 0-1 ground metric between labels (classes are
unordered), which equals the total variation distance: EMD_i = 0.5 * sum_c |p_i[c] - p[c]|, in [0, 1]
(0 = the client has the global mix; 1 - p[c] for a client holding only class c). Reported per client
(``label_emd``) and as the unweighted mean over clients (``mean_label_emd``). Other statistics: client size
mean/std/min/max and the mean number of classes per client. With a global test set, the statistics describe
the clients' own (train) samples, since the shared test set is not part of the partition.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np

from fedloom.data.base import PARTITIONERS
from fedloom.data.federated import FederatedData

def label_emd(counts: np.ndarray) -> np.ndarray:
    """Per-client EMD (0-1 metric, = total variation) of label distributions (rows of ``counts``) to the pooled
    one; see the module docstring."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts))
    glob = counts.sum(axis=0) / total
    sizes = counts.sum(axis=1, keepdims=True)
    local = np.divide(counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    return 0.5 * np.abs(local - glob).sum(axis=1)


label_tv_distances = label_emd  # the same statistic under its other name


def partition_summary(fd: FederatedData) -> dict[str, Any]:
    """Sizes, label counts and heterogeneity statistics of a partition (JSON-serializable)."""
    counts = fd.client_label_counts()
    sizes = counts.sum(axis=1)
    emd = label_emd(counts)
    glob = fd.test_split == "global"
    return {
        "dataset": fd.dataset.name,
        "num_clients": fd.num_clients,
        "num_classes": fd.num_classes,
        "dataset_size": len(fd.dataset),
        "test_split": fd.test_split,
        "global_test_size": int(len(fd.test_idx[0])) if glob and fd.num_clients else 0,
        "total_samples": int(sizes.sum()) + (int(len(fd.test_idx[0])) if glob and fd.num_clients else 0),
        "train_sizes": fd.train_sizes().tolist(),
        "test_sizes": fd.test_sizes().tolist(),
        "label_counts": counts.tolist(),
        "client_size_mean": float(sizes.mean()),
        "client_size_std": float(sizes.std()),
        "client_size_min": int(sizes.min()),
        "client_size_max": int(sizes.max()),
        "mean_classes_per_client": float((counts > 0).sum(axis=1).mean()),
        "mean_label_emd": float(emd.mean()),
        "label_emd": [round(float(v), 6) for v in emd],
    }


def class_labels(fd: FederatedData) -> list[str]:
    names = fd.dataset.class_names
    return list(names) if names and len(names) == fd.num_classes else [str(c) for c in range(fd.num_classes)]


#: beyond this many clients the table, the heatmap and the bar plots summarize instead of listing every client
SUMMARY_CLIENTS = 50
#: clients listed at each end (most and least skewed) of a summarized table
EXTREME_CLIENTS = 5


def format_table(fd: FederatedData) -> str:
    """A per-client table (client, train, test, label counts per class, EMD to the global label mix) with a
    header, a total row and a summary line. Beyond SUMMARY_CLIENTS clients: histograms of client sizes and of
    classes per client, and only the most and least skewed clients (label_counts.csv keeps every client)."""
    counts = fd.client_label_counts()
    emd = label_emd(counts)
    sizes = counts.sum(axis=1)
    many = fd.num_clients > SUMMARY_CLIENTS
    order = np.argsort(-emd, kind="stable")  # most skewed first (ties: lowest client id first)
    shown = np.concatenate([order[:EXTREME_CLIENTS], order[-EXTREME_CLIENTS:]]) if many else np.arange(len(emd))
    train, test = fd.train_sizes(), fd.test_sizes()
    rows = [[str(i), str(train[i]), str(test[i])] + [str(v) for v in counts[i]] + [f"{emd[i]:.3f}"] for i in shown]
    test_total = len(fd.test_idx[0]) if fd.test_split == "global" and fd.num_clients else test.sum()
    total = ["total", str(train.sum()), str(test_total)] + [str(v) for v in counts.sum(0)] + [""]
    header = ["client", "train", "test"] + [str(c) for c in range(fd.num_classes)] + ["EMD"]
    widths = [max(len(r[j]) for r in [header, total, *rows]) for j in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    body = [line(r) for r in rows]
    if many:
        body = [f"{EXTREME_CLIENTS} most skewed clients (highest label EMD):", *body[:EXTREME_CLIENTS],
                f"{EXTREME_CLIENTS} least skewed clients:", *body[EXTREME_CLIENTS:]]
    out = [
        f"{fd.dataset.name}: {fd.num_clients} clients, partition {describe(fd)}, train_ratio {fd.train_ratio}, "
        f"test split {_test_note(fd)}",
        *_legend(fd),
        *(_histograms(sizes, (counts > 0).sum(axis=1)) if many else []),
        line(header), *body, line(total),
        f"client size {sizes.mean():.1f} ± {sizes.std():.1f} (min {sizes.min()}, max {sizes.max()}); "
        f"classes/client {(counts > 0).sum(axis=1).mean():.2f}; mean label EMD to the global mix {emd.mean():.3f}; "
        f"hash {fd.partition_hash[:12]}",
    ]  # fmt: skip
    if many:
        out.append(f"({fd.num_clients} clients summarized; every client is in label_counts.csv with --out)")
    return "\n".join(out)


def size_bins(sizes: np.ndarray, bins: int = 10) -> np.ndarray:
    """Integer bin edges for client sizes: geometric when the sizes span more than a factor of 20 (a few
    large clients would otherwise squeeze every small one into the first bin), else linear."""
    low, high = int(sizes.min()), int(sizes.max()) + 1
    if high - low <= bins:
        return np.arange(low, high + 1)
    edges = np.geomspace(max(low, 1), high, bins + 1) if high > 20 * max(low, 1) else np.linspace(low, high, bins + 1)
    edges = np.unique(np.round(edges).astype(np.int64))
    edges[0] = low
    return edges


def _histograms(sizes: np.ndarray, classes: np.ndarray) -> list[str]:
    """Text histograms of client sizes and of classes per client (one line per bin, bars scaled to 40 chars)."""
    edges = size_bins(sizes)
    size_counts, _ = np.histogram(sizes, bins=edges)
    size_labels = [f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
    values, class_counts = np.unique(classes, return_counts=True)
    return ["client sizes (samples: clients):", *_bars(size_labels, size_counts),
            "classes per client (classes: clients):", *_bars([str(v) for v in values], class_counts)]


def _bars(labels: list[str], counts: np.ndarray) -> list[str]:
    width = max(len(s) for s in labels)
    top = max(int(counts.max()), 1)
    return [f"  {lab.rjust(width)}  {int(n):>7}  {'#' * int(round(40 * n / top))}" for lab, n in zip(labels, counts)]


def _legend(fd: FederatedData) -> list[str]:
    names = class_labels(fd)
    if names == [str(c) for c in range(fd.num_classes)]:
        return []
    return ["classes: " + ", ".join(f"{c}={n}" for c, n in enumerate(names))]


def _test_note(fd: FederatedData) -> str:
    if fd.test_split == "global":
        return f"global ({len(fd.test_idx[0]) if fd.num_clients else 0} shared test samples)"
    return "per-client"


def describe(fd: FederatedData) -> str:
    """'name(param=value, ..., seed=s)' with the parameters the partitioner declares in its ``params``."""
    p = fd.partition
    names = list(getattr(PARTITIONERS.get(p.name), "params", ()))
    if p.name == "feature-shift":  # show the base partitioner's parameters too
        names += [n for n in getattr(PARTITIONERS.get(p.base_partition), "params", ()) if n not in names]
    detail = ", ".join(f"{n}={getattr(p, n)}" for n in names) + (", " if names else "")
    return f"{p.name}({detail}seed={p.seed})"


REPORT_FILES = ("partition.json", "label_counts.csv", "partition.png", "label_distribution.png")


#: bump when the partition figures change, so that cached copies are redrawn
FIGURE_VERSION = 2


def write_partition_report(fd: FederatedData, out_dir: Path, cache_dir: Optional[Path] = None) -> None:
    """Write partition.json (spec, hash, summary), label_counts.csv, partition.png (heatmap + sizes) and
    label_distribution.png (stacked bars of counts and percentages) into ``out_dir``. The figures are drawn
    once per partition and copied from ``cache_dir``/figures (default: the partition cache) afterwards: every
    run of a grid on one partition would otherwise spend ~1 s of its start-up drawing the same two PNGs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": fd.dataset.name,
        "dataset_source": fd.dataset.source,
        "class_names": class_labels(fd),
        "partition": dataclasses.asdict(fd.partition),
        "partition_description": describe(fd),
        "train_ratio": fd.train_ratio,
        "test_split": fd.test_split,
        "partition_hash": fd.partition_hash,
        "summary": partition_summary(fd),
    }
    (out_dir / "partition.json").write_text(json.dumps(report, indent=1, default=str))
    _write_csv(fd, out_dir / "label_counts.csv")
    _figures(fd, out_dir, report, cache_dir)


def _figures(fd: FederatedData, out_dir: Path, report: dict[str, Any], cache_dir: Optional[Path]) -> None:
    from fedloom.data.cache import default_cache_dir

    # everything the figures show: the indices (hash), the title's words, the class names, the drawing code
    shown = {k: report[k] for k in ("dataset", "class_names", "partition_description", "train_ratio", "test_split",
                                    "partition_hash")}
    key = hashlib.sha256(json.dumps({**shown, "version": FIGURE_VERSION}, sort_keys=True,
                                    default=str).encode()).hexdigest()[:24]
    root = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "figures"
    for name in ("partition.png", "label_distribution.png"):
        cached = root / f"{key}-{name}"
        if cached.is_file():
            shutil.copyfile(cached, out_dir / name)
            continue
        from fedloom.data.plot import plot_label_distribution, plot_partition

        (plot_partition if name == "partition.png" else plot_label_distribution)(fd, out_dir / name)
        _store(out_dir / name, cached)


def _store(source: Path, cached: Path) -> None:
    """Copy into the cache atomically; an unwritable cache only loses the speed-up."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        shutil.copyfile(source, partial)
        os.replace(partial, cached)
    except OSError:
        pass


def _write_csv(fd: FederatedData, path: Path) -> None:
    """One row per client: client, train, test, the label counts per class of the client's own samples (train +
    test; train only with a global test set), then label_emd."""
    counts = fd.client_label_counts()
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["client", "train", "test"] + class_labels(fd) + ["label_emd"])
        for i, (tr, te, row, e) in enumerate(zip(fd.train_sizes(), fd.test_sizes(), counts, label_emd(counts))):
            writer.writerow([i, int(tr), int(te)] + [int(v) for v in row] + [f"{e:.6f}"])
