"""Tables and plots for docs/results/decentralized.md from the runs of runs.sh (under $OUT, default /tmp/dec)."""
import json, sys
from pathlib import Path
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import os
ROOT = Path(os.environ.get("OUT", "/tmp/dec"))
FIGS = Path(__file__).resolve().parent



def records(name):
    p = ROOT / name / "metrics.jsonl"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else None


def acc(r, key):
    return r.get(key, r["accuracy"])  # a star run's model is the global one


def traffic(r):
    """Bytes sent over the network so far: gossip counts each message once (up = down); a star run sends
    uploads and broadcasts."""
    return r.get("cum_bytes_up", 0) + (0 if "consensus_distance" in r else r.get("cum_bytes_down", 0))


def first_reaching(rs, key, target):
    for r in rs:
        if acc(r, key) >= target:
            return r
    return None


def row(name, key, target):
    rs = records(name)
    if rs is None:
        return f"| {name} | not run | | | | | |"
    last = rs[-1]
    hit = first_reaching(rs, key, target)
    mb = lambda b: f"{b / 1e6:.1f}"
    ct = lambda r: f"{r['cum_comm_time']:.1f}" if "cum_comm_time" in r else "n/a"
    hit_txt = f"{hit['round']} | {mb(traffic(hit))} | {ct(hit)}" if hit else "not reached | — | —"
    return (f"| {name} | {acc(last, key):.3f} | {last['accuracy']:.3f} | "
            f"{mb(traffic(last))} | {ct(last)} | {hit_txt} |")


def plot(names, tag, key):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, name in enumerate(names):
        rs = records(name)
        if not rs:
            continue
        label = name.split("-", 2)[-1]
        sent = [r for r in rs if traffic(r) > 0]  # round 0 sent nothing (no point on a log axis)
        axes[0].plot([traffic(r) / 1e6 for r in sent], [acc(r, key) for r in sent], marker="o", ms=3, label=label,
                     color=f"C{index}")
        if "cum_comm_time" in rs[-1]:
            timed = [r for r in sent if r.get("cum_comm_time", 0) > 0]
            axes[1].plot([r["cum_comm_time"] for r in timed], [acc(r, key) for r in timed], marker="o", ms=3,
                         label=label, color=f"C{index}")
    axes[0].set_xlabel("cumulative MB sent (all nodes)"); axes[1].set_xlabel("simulated communication time (s)")
    for ax in axes:
        ax.set_ylabel(key); ax.legend(); ax.grid(alpha=0.3)
    axes[0].set_xscale("log")
    axes[1].set_xscale("log")
    fig.suptitle(tag)
    fig.tight_layout()
    fig.savefig(FIGS / f"{tag}.png", dpi=90)


if __name__ == "__main__":
    targets = [float(t) for t in sys.argv[1:]] or [0.7]
    for group, target in [(g, t) for t in targets for g in ["n14-dir", "n14-iid", "n100-dir"]]:
        names = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name.startswith(group))
        print(f"\n{group} (target avg-model accuracy {target}):")
        print("| run | final avg-model acc | final node acc | MB sent | comm time (s) | round at target | MB at target | comm s at target |")  # noqa
        print("|---|---|---|---|---|---|---|---|")
        for n in names:
            print(row(n, "avg_model_accuracy", target))
        plot(names, group, "avg_model_accuracy")
    for n in sorted(p.name for p in ROOT.iterdir() if p.is_dir() and ("bdfl" in p.name or "signflip" in p.name)):
        rs = records(n)
        if rs:
            print(n, [(r["round"], round(r["accuracy"], 3), r.get("cum_blocks"), r.get("cum_malicious_blocks")) for r in rs])
