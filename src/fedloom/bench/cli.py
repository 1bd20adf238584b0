"""The ``bench`` and ``report`` subcommands and ``run --resume`` config handling (kept out of fedloom.cli so
that the main CLI stays a thin dispatcher). Heavy imports happen inside the commands."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from fedloom.errors import ConfigError


def add_bench_parsers(sub: Any) -> None:
    """Register ``fedloom bench`` and ``fedloom report`` on the main parser's subcommands."""
    bench = sub.add_parser("bench", help="run a grid of experiments (base config x axes x seeds)",
                           description="Run every run of a grid file in parallel worker processes. Completed "
                           "runs are skipped, interrupted ones resume, so re-running continues. See docs/bench.md.",
                           allow_abbrev=False)
    bench.add_argument("grid", help="grid file (TOML: [grid], [base], [axes])")
    bench.add_argument("--workers", type=int, default=None, help="parallel runs (default: grid file, else cores)")
    bench.add_argument("--out", default=None, help="root of the run folders (default: the grid's out)")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a key of the base config, e.g. --set rounds=5 (changes the run hashes)")
    bench.add_argument("--dry-run", action="store_true",
                       help="validate and list the runs with an estimate of each run's time (from completed runs "
                            "of the same setting, else one calibration round per setting); run nothing")
    bench.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                       help="with --dry-run: estimate only from completed runs, run no calibration round")
    report = sub.add_parser("report", help="leaderboard, curves and plots from run folders",
                            description="Aggregate the completed run folders under RUNS_DIR into report.md, "
                            "report.html (self-contained) and leaderboard.csv.", allow_abbrev=False)
    report.add_argument("runs_dir", help="folder searched recursively for run folders")
    report.add_argument("--out", default=None, help="report folder (default: RUNS_DIR/report)")
    report.add_argument("--reference", default=None, metavar="CSV",
                        help="published numbers (dataset,partition,model,algorithm,accuracy,...) for the "
                             "'published' and 'Δ' columns, e.g. benchmarks/reference/pfllib-leaderboard.csv")
    report.add_argument("--target", type=float, default=None, metavar="ACC",
                        help="accuracy (fraction) for rounds-to-target; default 90%% of the group's top best")
    report.add_argument("--title", default=None, help="report title")
    report.add_argument("--into", default=None, metavar="DOC",
                        help="also rewrite the tables between <!-- tables:start --> and <!-- tables:end --> "
                             "in this markdown file (e.g. docs/results/fmnist-pfl.md); the prose is kept")
    report.add_argument("--trust-last", type=int, default=1, metavar="K",
                        help="attack × defense tables: MA and ASR at the round with the best MA among each run's "
                             "last K evaluated rounds (default 1: the final round); see docs/trust-attacks.md")


def cmd_bench(args: argparse.Namespace) -> int:
    from fedloom.bench.grid import load_grid, plan
    from fedloom.bench.runner import print_plan, run_grid

    spec = load_grid(Path(args.grid), args.overrides, out=args.out, workers=args.workers)
    runs = plan(spec)
    if args.dry_run:
        print_plan(spec, runs, calibrate=args.calibrate)
        return 0
    result = run_grid(spec, runs)
    return 0 if not (result.failed or result.busy) else 1  # an incomplete grid is not a success


def cmd_report(args: argparse.Namespace) -> int:
    from fedloom.bench.report import write_report

    root = Path(args.runs_dir)
    out = Path(args.out) if args.out else root / "report"
    if args.target is not None and not 0 < args.target <= 1:
        raise ConfigError(f"--target must be an accuracy in (0, 1], got {args.target}")
    if args.trust_last < 1:
        raise ConfigError(f"--trust-last must be >= 1 (evaluated rounds), got {args.trust_last}")
    from fedloom.resources import packaged  # the README's reference CSV, also from an installed wheel

    summary = write_report(root, out, reference=packaged(Path(args.reference)) if args.reference else None,
                           target=args.target, title=args.title,
                           into=Path(args.into) if args.into else None, trust_last=args.trust_last)
    print(summary)
    return 0


def resume_raw(args: argparse.Namespace) -> dict[str, Any]:
    """``run --resume RUN_DIR``: the folder's config.toml, then any flags/--set given with it. Flags that would
    change the results are refused here, whether or not the folder has a checkpoint: a resumed run must be the
    run its folder describes (only where/how it executes may change: --threads, --quiet, --checkpoint-every...)."""
    from fedloom.checkpoint import resume_config_raw
    from fedloom.cli import raw_from_args

    if getattr(args, "config", None):
        raise ConfigError("--resume takes its config from RUN_DIR/config.toml; do not also give a config file")
    run_dir = Path(args.resume)
    original = resume_config_raw(run_dir)
    extra = raw_from_args(args, with_file=False)
    if extra.get("out") is not None:
        raise ConfigError(f"--resume {run_dir} continues the run in that folder; do not also give --out")
    raw = copy.deepcopy(original)
    for namespace, opts in extra.pop("options", {}).items():
        raw.setdefault("options", {}).setdefault(namespace, {}).update(opts)
    raw.update(extra)
    raw["out"] = str(run_dir)  # the folder may have moved since config.toml was written
    check_same_identity(run_dir, original, raw)
    return raw


def check_same_identity(run_dir: Path, original: dict[str, Any], raw: dict[str, Any]) -> None:
    """ConfigError naming the keys in which ``raw`` (config.toml plus the flags) would compute a different run
    than ``original`` (config.toml alone); both are resolved first, so defaults and spellings compare equal."""
    from fedloom.checkpoint import NON_IDENTITY_FIELDS, config_identity, differing_keys
    from fedloom.config import build_config
    from fedloom.run import resolve_config

    # where/how fields come from the flags on both sides: config.toml may name a --data-dir that has moved
    original = {**{k: v for k, v in original.items() if k not in NON_IDENTITY_FIELDS},
                **{k: v for k, v in raw.items() if k in NON_IDENTITY_FIELDS}}
    before = config_identity(resolve_config(build_config(original)))
    after = config_identity(resolve_config(build_config(raw)))
    changed = differing_keys(before, after)
    if changed:
        keys = ", ".join(k.removeprefix("options.") for k in changed)
        raise ConfigError(f"--resume {run_dir}: {keys} would change the results; start a new run instead "
                          "(only --threads, --quiet, --checkpoint-every and other non-result flags may change)")
