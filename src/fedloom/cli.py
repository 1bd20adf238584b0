"""Command line: ``fedloom run | partition | list``. Thin: parse → RunConfig → call the library.

Flags are generated from RunConfig's fields (``--join-ratio`` for ``join_ratio``) and from the option
dataclasses of every registered algorithm, dataset, model, seam and engine (``--fedprox.mu``,
``--processes.workers``), so the CLI and the config file share one schema. Any FedloomError ends as one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Sequence

from fedloom.config import (RUN_FIELDS, RunConfig, build_config, component_fields, load_toml, parse_set,
                            set_value)
from fedloom.errors import ConfigError, FedloomError
from fedloom.signals import exit_status, termination_handlers
from fedloom.bench.cli import add_bench_parsers, cmd_bench, cmd_report, resume_raw
from fedloom.flower.template import add_flower_parsers, cmd_flower

PARTITION_FIELDS = ("dataset", "partition", "alpha", "classes_per_client", "balanced", "min_samples", "clients",
                    "train_ratio", "data_seed", "data_dir", "cache_dir", "batch_size", "test_split",
                    "shards_per_client", "quantity_dist", "size_alpha", "sigma", "base_partition", "feature_shift",
                    "domains", "shift_strength", "partition_file")
OPTION_PREFIX = "opt:"


def _registries() -> list[Any]:
    from fedloom.algorithms import ALGORITHMS
    from fedloom.data.base import DATASETS
    from fedloom.models import MODELS
    from fedloom.models.families import FAMILIES
    import fedloom.data.datasets  # noqa: F401
    from fedloom.seams import SEAM_REGISTRIES
    from fedloom.engines import ENGINE_OPTIONS

    return [ALGORITHMS, DATASETS, MODELS, FAMILIES, *SEAM_REGISTRIES, ENGINE_OPTIONS]  # every registry with options


def _add_run_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        fld = RUN_FIELDS[name]
        flag = "--" + name.replace("_", "-")
        help_text = f"{fld.metadata.get('help', '')} (default: {fld.default})"
        if fld.type in ("bool", bool):
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=help_text)


def _add_option_flags(parser: argparse.ArgumentParser, shown: Optional[set[str]] = None) -> None:
    """Every component's option flags; those of components not in ``shown`` (cli_help.help_selection) are
    accepted but left out of --help."""
    from fedloom.cli_help import hidden

    for registry in _registries():
        group = parser.add_argument_group(f"{registry.kind} options")
        for name, cls in registry.items():
            for fname, fld in component_fields(cls).items():
                default = fld.default if fld.default is not dataclasses.MISSING else "required"
                text = f"{fld.metadata.get('help', '')} (default: {default})".strip().replace("%", "%%")
                group.add_argument(f"--{name}.{fname.replace('_', '-')}", dest=f"{OPTION_PREFIX}{name}.{fname}",
                                   default=argparse.SUPPRESS, metavar="V",
                                   help=argparse.SUPPRESS if hidden(shown, name) else text)


class Parser(argparse.ArgumentParser):
    """argparse with fedloom's error convention: a command-line mistake is one ``fedloom: error:`` line and
    exit status 2 (raised as ConfigError, so ``main`` reports it like any other bad input), and no flag may be
    abbreviated (``--round 3`` must not silently mean ``--rounds 3``). Subcommand parsers inherit the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def make_parser(argv: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The parser; ``argv`` (when given) decides which component options ``run --help`` shows."""
    from fedloom.cli_help import HELP_ALL_NOTE, help_selection

    shown = help_selection(argv)
    parser = Parser(prog="fedloom", description="Federated learning research toolkit.", allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one experiment", description="Run one federated experiment. "
                         "Precedence: defaults < config file < flags < --set.", allow_abbrev=False,
                         epilog=HELP_ALL_NOTE if shown is not None else None)
    run.add_argument("--help-all", action="help", help="show the options of every algorithm, dataset, model, "
                     "seam and engine, and exit")
    run.add_argument("config", nargs="?", help="TOML config file (top-level run keys, [name] option tables)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config key, e.g. --set rounds=100 --set fedprox.mu=0.1")
    run.add_argument("--resume", metavar="RUN_DIR", default=None,
                     help="continue an interrupted run folder from its checkpoint (see --checkpoint-every)")
    _add_run_flags(run, list(RUN_FIELDS))
    _add_option_flags(run, shown)
    part = sub.add_parser("partition", help="make, summarize and plot a partition", allow_abbrev=False)
    part.add_argument("--out", dest="out", default=None, help="folder for partition.json/png, label_counts.csv and "
                      "clients.npz (every client's train/test indices, for --partition-file)")
    part.add_argument("--pfllib", dest="pfllib", default=None, metavar="DIR",
                      help="also write the clients in PFLlib's layout (DIR/config.json, DIR/train/{i}.npz, DIR/test/)")
    _add_run_flags(part, PARTITION_FIELDS)
    # a partition has no training seed: --seed here is the partition seed (the runs' --data-seed)
    part.add_argument("--seed", dest="data_seed", default=argparse.SUPPRESS, metavar="SEED",
                      help="partition seed (same as --data-seed; runs keep it fixed across training seeds)")
    for registry in _registries()[1:2]:  # dataset options (e.g. --synthetic.alpha)
        for name, cls in registry.items():
            for fname in component_fields(cls):
                part.add_argument(f"--{name}.{fname.replace('_', '-')}", dest=f"{OPTION_PREFIX}{name}.{fname}",
                                  default=argparse.SUPPRESS, metavar="V")
    sub.add_parser("list", help="list algorithms, datasets, models, partitioners and engines", allow_abbrev=False)
    add_bench_parsers(sub)
    add_flower_parsers(sub)
    for command in sub.choices.values():  # read early by main (plugins.specs_from_argv); declared for --help
        command.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                             help="import a plugin module or .py file that registers components (repeatable; "
                                  "also read from $FEDLOOM_IMPORT, see docs/python.md)")
    return parser


def raw_from_args(args: argparse.Namespace, with_file: bool = True) -> dict[str, Any]:
    raw: dict[str, Any] = load_toml(Path(args.config)) if with_file and getattr(args, "config", None) else {}
    for key, value in vars(args).items():
        if key.startswith(OPTION_PREFIX):
            set_value(raw, key[len(OPTION_PREFIX):], value)
        elif key in RUN_FIELDS and value is not None:
            raw[key] = value
    for item in getattr(args, "overrides", []):
        set_value(raw, *parse_set(item))
    return raw


def cmd_run(args: argparse.Namespace) -> int:
    from fedloom.run import run_experiment

    cfg = build_config(resume_raw(args) if args.resume else raw_from_args(args))
    bar = None if cfg.quiet else _progress_bar(cfg.rounds)
    try:
        outcome = run_experiment(cfg, progress=bar.update_round if bar else None, resume=bool(args.resume))
    finally:
        if bar:
            bar.close()
    s = outcome.summary
    print(f"{s['algorithm']} on {s['dataset']} ({s['partition']}, {s['clients']} clients, {s['rounds']} rounds): "
          f"final accuracy {s['final_accuracy']:.4f}, best {s['best_accuracy']:.4f} (round {s['best_round']}), "
          f"{s['wall_seconds']:.1f}s -> {outcome.folder}")
    if "diverged" in s:
        print(f"the run diverged in round {s['diverged']['round']} and ended there (--on-divergence record): "
              f"{s['diverged']['reason']}")
    return 0


class _progress_bar:
    """A tqdm bar opened at the first finished round, so that a run refused at start-up prints only its error."""

    def __init__(self, rounds: int) -> None:
        self.rounds, self.done, self.bar = rounds, 0, None

    def update_round(self, round_: int, record: dict[str, Any]) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.rounds, desc="rounds", unit="round", dynamic_ncols=True, file=sys.stderr)
        self.bar.update(round_ - self.done)
        self.done = round_
        self.bar.set_postfix(acc=f"{record['accuracy']:.4f}", loss=f"{record['loss']:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_partition(args: argparse.Namespace) -> int:
    from fedloom.data.summary import format_table, write_partition_report
    from fedloom.run import load_data, resolve_config

    raw = raw_from_args(args, with_file=False)
    raw.pop("out", None)
    cfg = resolve_config(build_config(raw))
    data = load_data(cfg, __import__("torch").device("cpu"))
    print(format_table(data))
    print(f"partition hash: {data.partition_hash}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_partition_report(data, out, cache_dir=cfg.cache_dir)
        from fedloom.data.partition_io import FILE_NAME, write_partition_file

        write_partition_file(data, out / FILE_NAME, cfg.dataset, cfg.options.get(cfg.dataset, {}), cfg.data_seed)
        print(f"wrote partition.json, label_counts.csv, partition.png, label_distribution.png, {FILE_NAME} to {out}")
    if args.pfllib:
        from fedloom.data.partition_io import export_pfllib

        print(f"wrote PFLlib layout (config.json, train/, test/) to {export_pfllib(data, Path(args.pfllib), cfg.batch_size)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from fedloom.data.base import PARTITIONERS
    import fedloom.data.partitioners  # noqa: F401

    from fedloom.patterns import PATTERNS
    from fedloom.patterns.topology import TOPOLOGIES

    from fedloom.cli_help import wrapped_entry

    from fedloom.trackers import TRACKERS

    registries = list(dict.fromkeys((*_registries(), PARTITIONERS, PATTERNS, TOPOLOGIES, TRACKERS)))  # engines: options
    for registry in registries:
        print(f"{registry.kind[:-1] + 'ies' if registry.kind.endswith('y') else registry.kind + 's'}:")
        for name, obj in registry.items():
            doc = _summary_line(obj)
            options = ", ".join(f"{name}.{f}" for f in component_fields(obj)) if isinstance(obj, type) else ""
            print(wrapped_entry(name, doc + (f" [options: {options}]" if options else "")))
    return 0


def _summary_line(obj: Any) -> str:
    """First paragraph of the object's docstring (or of its module's when the docstring is dataclass-generated)
    on one line, up to its first sentence when it is long."""
    doc = (obj.__doc__ or "").strip()
    if not doc or doc.startswith(f"{getattr(obj, '__name__', '')}("):
        doc = (sys.modules[obj.__module__].__doc__ or "").strip()
    paragraph = " ".join(doc.split("\n\n")[0].split()) if doc else ""
    first = paragraph.split(". ")[0].rstrip(".") + "."
    return first if len(paragraph) > 160 and len(first) > 20 else paragraph


COMMANDS = {"run": cmd_run, "partition": cmd_partition, "list": cmd_list, "bench": cmd_bench, "report": cmd_report,
            "flower": cmd_flower}


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        from fedloom.plugins import import_plugin, specs_from_argv

        argv = sys.argv[1:] if argv is None else list(argv)
        for spec in specs_from_argv(argv):
            import_plugin(spec)  # before the parser: the plugin's option flags must exist
        args = make_parser(argv).parse_args(argv)
        with termination_handlers():  # SIGTERM/SIGHUP clean up like Ctrl-C (FAILED marker, workers, lock)
            return COMMANDS[args.command](args)
    except FedloomError as exc:
        print(f"fedloom: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"fedloom: interrupted ({exc})" if str(exc) else "fedloom: interrupted", file=sys.stderr)
        return exit_status(exc)
    except BrokenPipeError:  # the reader left (`fedloom partition ... | head -3`): end quietly, as Unix tools do
        from fedloom.cli_help import silence_stdout

        silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a process that a closed pipe ended


if __name__ == "__main__":
    sys.exit(main())
