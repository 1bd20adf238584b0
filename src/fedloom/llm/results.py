"""The FedKSeed results on the offline Shakespeare instruction task (docs/results/fedkseed.md): one algorithm per
process (so that peak memory is its own), from a pretrained model directory (fedloom.llm.pretrain).

    python -m fedloom.llm.results one --model-dir DIR --algorithm fedkseed --rounds 20 --json out/fedkseed.json \\
        --set fedkseed.lr=3e-4
    python -m fedloom.llm.results one --model-dir DIR --algorithm untuned --json out/untuned.json
    python -m fedloom.llm.results table out/*.json

``one`` runs the federated experiment in memory (fedloom.api.run), then scores the final global model by greedy
Rouge-L on up to ``--rouge-examples`` test examples of every client, and writes: test loss and token accuracy,
Rouge-L, bytes per client per round (up and down, from the run's metrics), seconds per round and the process's
peak resident memory. ``untuned`` scores the pretrained model itself (no round is run).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

#: the run every algorithm shares (clients = speaking roles of the task plays)
BASE = dict(dataset="shakespeare-instruct", model="hf", clients=8, join_ratio=0.5, train_ratio=0.75, seed=0,
            device="cpu", threads=1, min_samples=8, eval_every=5)


def coerce(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def options_of(settings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["fedkseed.lr=3e-4"]`` → ``{"fedkseed": {"lr": 3e-4}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in settings:
        key, value = item.split("=", 1)
        table, name = key.split(".", 1)
        out.setdefault(table, {})[name.replace("-", "_")] = coerce(value)
    return out


def rouge_on_tests(cfg: Any, params: dict, model_dir: str, per_client: int) -> dict[str, float]:
    from fedloom.data.federated import FederatedData  # noqa: F401  (type only)
    from fedloom.llm.evaluate import rouge_l_eval
    from fedloom.llm.tokenizer import load_tokenizer
    from fedloom.models.lm import HFCausalLM
    from fedloom.run import load_data

    data = load_data(cfg, torch.device("cpu"))
    idx = torch.cat([i[:per_client] for i in data.test_idx])
    model = HFCausalLM(path=model_dir).build(tuple(data.dataset.x.shape[1:]), 1)
    return rouge_l_eval(model, params, load_tokenizer(model_dir), data.dataset.x[idx])


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    from fedloom import api
    from fedloom.run import resolve_config

    options = options_of(args.set)
    options.setdefault("hf", {})["path"] = args.model_dir
    options.setdefault("shakespeare-instruct", {})["tokenizer"] = args.model_dir
    untuned = args.algorithm == "untuned"
    kwargs = dict(BASE, algorithm="fedavg" if untuned else args.algorithm, rounds=0 if untuned else args.rounds,
                  lr=args.lr, batch_size=args.batch_size, local_epochs=args.local_epochs)
    start = time.perf_counter()
    if untuned:
        from fedloom.algorithms.tree import tree_clone
        from fedloom.run import build_experiment, load_data
        from fedloom.rounds import initial_round

        cfg = resolve_config(api.make_config(None, options, **{**kwargs, "rounds": 1}))
        exp = build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
        server, record, _ = initial_round(exp)
        records, params, summary = [record], tree_clone(server.broadcast.params), {"rounds": 0}
    else:
        result = api.run(None, out=None, options=options, **kwargs)
        cfg, records, summary = resolve_config(result.config), result.records, result.summary
        params = result.server.broadcast.params
    seconds = time.perf_counter() - start
    rouge = rouge_on_tests(cfg, params, args.model_dir, args.rouge_examples)
    last = records[-1]
    sampled = max(int(last.get("clients_sampled", 1) or 1), 1)
    return {"algorithm": args.algorithm, "rounds": summary.get("rounds", 0), "options": options,
            "test_loss": last["loss"], "token_accuracy": last["accuracy"], "rouge_l": rouge["rouge_l"],
            "rouge_examples": rouge["examples"], "empty_generations": rouge["empty_generations"],
            "bytes_up_per_client_round": last.get("bytes_up", 0) / sampled,
            "bytes_down_per_client_round": last.get("bytes_down", 0) / sampled,
            "seconds_per_round": summary["wall_seconds"] / max(summary["rounds"], 1) if not untuned else None,
            "setup_and_run_seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "curve": [{"round": r["round"], "loss": r["loss"], "accuracy": r["accuracy"]} for r in records]}


def table(paths: Sequence[Path]) -> str:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    lines = ["| method | rounds | test loss | token acc. | Rouge-L | bytes up / client / round | "
             "bytes down / client / round | s / round | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_round = "–" if r["seconds_per_round"] is None else f"{r['seconds_per_round']:.1f}"
        lines.append(f"| {r['algorithm']} | {r['rounds']} | {r['test_loss']:.4f} | {r['token_accuracy']:.4f} | "
                     f"{r['rouge_l']:.2f} | {r['bytes_up_per_client_round']:,.0f} | "
                     f"{r['bytes_down_per_client_round']:,.0f} | {per_round} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedloom.llm.results")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("one")
    one.add_argument("--model-dir", required=True)
    one.add_argument("--algorithm", required=True, help="fedkseed, fedkseed-pro, fedavg-zo, fedit or untuned")
    one.add_argument("--rounds", type=int, default=20)
    one.add_argument("--lr", type=float, default=0.05, help="--lr of the run (first-order local SGD: fedit)")
    one.add_argument("--batch-size", type=int, default=8)
    one.add_argument("--local-epochs", type=int, default=1)
    one.add_argument("--rouge-examples", type=int, default=12, help="test examples per client for Rouge-L")
    one.add_argument("--set", action="append", default=[], help="component option, e.g. fedkseed.lr=3e-4")
    one.add_argument("--json", type=Path, required=True)
    tab = sub.add_parser("table")
    tab.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.command == "table":
        print(table(args.paths))
        return 0
    torch.set_num_threads(1)
    out = run_one(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
