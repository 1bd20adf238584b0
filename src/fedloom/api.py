"""The Python API: ``fedloom.run``, ``fedloom.partition`` and ``fedloom.load_runs`` (see docs/python.md).

Values go through the CLI's own path (``config.build_config`` then ``run.resolve_config``), so a notebook gets
the same coercion (``lr="0.05"``), the same case-insensitive names (``options={"FedProx": {"mu": 0.1}}``) and
the same one-line ConfigError messages as ``fedloom run``. A run either writes its run folder (``out="DIR"``)
or is kept in memory (``out=None``, the default: nothing is written). The caller's torch thread count is
restored afterwards.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
import torch

from fedloom.config import RunConfig, build_config, load_toml, raw_from_table, set_value
from fedloom.errors import ConfigError
from fedloom.extras import require

ConfigLike = Union[None, str, Path, dict, RunConfig]
Callback = Callable[[int, dict], Any]
_UNSET: Any = object()


class StopRun(Exception):
    """Raise from a callback (or return False) to end a run after the round the callback was called for."""


# ------------------------------------------------------------------------------------------------ configs
def _raw(config: ConfigLike) -> dict[str, Any]:
    """A raw config dict (top-level run keys, ``options`` per component) from any accepted form."""
    if config is None:
        return {}
    if isinstance(config, (str, Path)):
        return load_toml(Path(config))
    if isinstance(config, RunConfig):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a TOML file path, a dict or a RunConfig, got {type(config).__name__}")
    table = dict(config)
    options = table.pop("options", None) or {}
    raw = raw_from_table(table)  # {"fedprox": {"mu": 0.1}} tables as in a config file
    _merge_options(raw, options)
    return raw


def _merge_options(raw: dict[str, Any], options: Any) -> None:
    """``{"FedProx": {"mu": 0.1}}`` into ``raw["options"]`` (names made canonical by set_value)."""
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise ConfigError(f"options must map component names to dicts of options, e.g. "
                          f"{{'fedprox': {{'mu': 0.1}}}}; got {options!r}")
    for namespace, table in options.items():
        for key, value in table.items():
            set_value(raw, f"{namespace}.{key}", value)


def make_config(config: ConfigLike = None, options: Optional[dict] = None, **kwargs: Any) -> RunConfig:
    """A typed RunConfig from a file path, dict or RunConfig, overridden by ``kwargs`` (run keys, or a dict per
    component as in a config file) and then by ``options``; coerced and checked like the CLI's flags."""
    raw = _raw(config)
    extra = _raw(kwargs)
    for namespace, table in extra.pop("options", {}).items():
        _merge_options(raw, {namespace: table})
    raw.update(extra)
    _merge_options(raw, options or {})
    return build_config(raw)


# ------------------------------------------------------------------------------------------------ results
def _frame(rows: list[dict[str, Any]]) -> Any:
    pandas = require("pandas", "pandas", "a DataFrame")
    return pandas.DataFrame(rows)


@dataclass
class RunResult:
    """What a run produced: per-round metrics, the per-client table, the final server state and the summary.

    ``records``: one dict per evaluated round (metrics.jsonl), ``clients``: one dict per client (clients.csv),
    ``server``: the final ``ServerResult`` (``.state``, ``.broadcast``), ``folder``: the run folder or None."""

    config: RunConfig
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    server: Any
    folder: Optional[Path]

    @property
    def final_accuracy(self) -> float:
        return float(self.summary["final_accuracy"])

    @property
    def best_accuracy(self) -> float:
        return float(self.summary["best_accuracy"])

    @property
    def server_state(self) -> Any:
        return self.server.state

    @property
    def stopped_early(self) -> bool:
        return bool(self.summary.get("stopped_early", False))

    @property
    def diverged_round(self) -> Optional[int]:
        """The round a run with ``on_divergence="record"`` diverged in and ended (None: it did not)."""
        diverged = self.summary.get("diverged")
        return None if diverged is None else int(diverged["round"])

    def frame(self) -> Any:
        """The per-round metrics as a pandas DataFrame (needs pandas)."""
        return _frame(self.records)

    def clients_frame(self) -> Any:
        """The per-client table as a pandas DataFrame (needs pandas)."""
        return _frame(self.clients)

    def __repr__(self) -> str:
        s = self.summary
        return (f"RunResult({s['algorithm']} on {s['dataset']}, {s['rounds']} rounds: final accuracy "
                f"{s['final_accuracy']:.4f}, best {s['best_accuracy']:.4f}; folder={self.folder})")


def _callback(callbacks: Iterable[Callback]) -> Optional[Callback]:
    """One progress function calling every user callback with (round, metrics); False when any asked to stop
    (returned False or raised StopRun). Every callback sees every round it is called for."""
    fns = list(callbacks)
    if not fns:
        return None

    def call(round_: int, record: dict[str, Any]) -> Optional[bool]:
        stop = False
        for fn in fns:
            try:
                stop = (fn(round_, dict(record)) is False) or stop
            except StopRun:
                stop = True
        return False if stop else None

    return call


# ------------------------------------------------------------------------------------------------ running
def run(config: ConfigLike = None, *, out: Any = _UNSET, callbacks: Iterable[Callback] = (),
        options: Optional[dict] = None, **kwargs: Any) -> RunResult:
    """Run one experiment and return its :class:`RunResult`.

    ``config``: a TOML file path, a dict (run keys and component tables) or a RunConfig; ``kwargs`` override it
    (``rounds=5, lr="0.05", fedprox={"mu": 0.1}``), ``options`` last (``{"FedProx": {"mu": 0.1}}``).
    ``out``: a run folder to write (as ``fedloom run --out``), or None to keep everything in memory; when not
    given, the config's ``out`` if it has one, else None. ``callbacks``: functions ``fn(round, metrics)`` called
    after the initial evaluation (round 0) and after every evaluated round; returning False or raising
    :class:`StopRun` ends the run after that round (the summary says ``stopped_early``)."""
    from fedloom.run import run_experiment

    cfg = make_config(config, options, **kwargs)
    folder = cfg.out if out is _UNSET else (None if out is None else str(out))
    cfg = dataclasses.replace(cfg, out=folder, quiet=True)
    progress = _callback(callbacks)
    threads = torch.get_num_threads()
    try:
        outcome = run_experiment(cfg, progress=progress) if folder is not None else _run_in_memory(cfg, progress)
    finally:
        torch.set_num_threads(threads)  # the run set its own (cfg.threads); the caller's comes back
    return RunResult(dataclasses.replace(outcome.config, out=folder), outcome.summary, outcome.records,
                     outcome.clients, outcome.server, outcome.folder)


def _run_in_memory(cfg: RunConfig, progress: Optional[Callback]) -> Any:
    """The run loop with a MemoryFolder: no run folder, no plots, no checkpoint. A disk client-state store
    (``store="disk"``, or ``auto`` for states too big for memory) lives in a temporary folder removed after."""
    from fedloom.run import prepare_experiment, run_rounds, start_progress, wants_stop
    from fedloom.tracking import MemoryFolder

    if cfg.checkpoint_every:
        raise ConfigError("checkpoint_every needs a run folder: give out='DIR' (out=None keeps the run in memory)")
    if cfg.trackers:
        raise ConfigError("trackers mirror a run folder: give out='DIR' (out=None keeps the run in memory)")
    with tempfile.TemporaryDirectory(prefix="fedloom-api-") as tmp:
        exp = prepare_experiment(dataclasses.replace(cfg, out=str(Path(tmp) / "run")))
        try:
            folder = MemoryFolder()
            start = start_progress(exp, folder)
            outcome = run_rounds(exp, folder, progress, start, wants_stop(progress, 0, start.records[0]))
        finally:
            exp.engine.close()
        return outcome


# ------------------------------------------------------------------------------------------------ partitions
@dataclass
class Partition:
    """A partition of a dataset among clients (``fedloom.partition``): per-client train/test indices into the
    pooled dataset, its summary and figure. ``data`` is the FederatedData a run would train on."""

    config: RunConfig
    data: Any

    @property
    def num_clients(self) -> int:
        return int(self.data.num_clients)

    @property
    def hash(self) -> str:
        return str(self.data.partition_hash)

    @property
    def train_indices(self) -> list[np.ndarray]:
        """One int64 array per client: its training samples' positions in the pooled dataset."""
        return [t.cpu().numpy() for t in self.data.train_idx]

    @property
    def test_indices(self) -> list[np.ndarray]:
        return [t.cpu().numpy() for t in self.data.test_idx]

    @property
    def label_counts(self) -> np.ndarray:
        """[clients, classes] label counts of each client's own samples."""
        return self.data.client_label_counts()

    def summary(self) -> dict[str, Any]:
        """Sizes, label counts and heterogeneity statistics (what partition.json holds)."""
        from fedloom.data.summary import partition_summary

        return partition_summary(self.data)

    def table(self) -> str:
        """The table ``fedloom partition`` prints."""
        from fedloom.data.summary import format_table

        return format_table(self.data)

    def plot(self, path: Union[None, str, Path] = None, kind: str = "partition") -> Any:
        """The partition figure as a matplotlib Figure (``kind="partition"``: label-count heatmap and client
        sizes, partition.png; ``"labels"``: stacked label distributions, label_distribution.png); also saved
        to ``path`` when given. The drawings are fedloom.data.plot's, the ones in every run folder."""
        from fedloom.data.plot import label_distribution_figure, partition_figure

        figures = {"partition": partition_figure, "labels": label_distribution_figure}
        if kind not in figures:
            raise ConfigError(f"kind must be one of {', '.join(figures)}, got {kind!r}")
        fig = figures[kind](self.data)
        if path is not None:
            fig.savefig(Path(path), dpi=110)
        return fig

    def __repr__(self) -> str:
        return (f"Partition({self.config.dataset}, {self.config.partition}, {self.num_clients} clients, "
                f"hash {self.hash[:12]})")


def partition(config: ConfigLike = None, *, options: Optional[dict] = None, **kwargs: Any) -> Partition:
    """The partition a run with these settings would use (``dataset``, ``partition``, ``clients``, ``alpha``,
    ``data_seed``...; same values and checks as ``fedloom partition``), without training anything."""
    from fedloom.run import load_data, resolve_config

    cfg = resolve_config(dataclasses.replace(make_config(config, options, **kwargs), out="-"))
    return Partition(dataclasses.replace(cfg, out=None), load_data(cfg, torch.device("cpu")))


# ------------------------------------------------------------------------------------------------ run folders
#: Columns that name a run in load_runs' table, first.
KEY_COLUMNS = ("run", "algorithm", "dataset", "partition", "model", "clients", "seed")


def load_runs(root: Union[str, Path], per: str = "round", frame: bool = True) -> Any:
    """One tidy table of every completed run folder under ``root`` (searched recursively).

    ``per="round"``: a row per evaluated round of each run (its metrics.jsonl); ``per="run"``: a row per run (its
    summary.json). Each row starts with the run's folder (relative to ``root``), its key settings and every other
    setting that differs between the runs found (``fedprox.mu``...), then ``config_hash``. A pandas DataFrame,
    or a list of dicts with ``frame=False``."""
    from fedloom.bench.collect import find_runs
    from fedloom.checkpoint import config_hash, config_identity

    if per not in ("round", "run"):
        raise ConfigError(f"per must be 'round' or 'run', got {per!r}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"load_runs: no such folder {root}")
    runs, _ = find_runs(root)
    flats = [_flat(config_identity(r.config)) for r in runs]
    varying = sorted({k for f in flats for k in f if any(g.get(k) != f.get(k) for g in flats)} - set(KEY_COLUMNS))
    rows: list[dict[str, Any]] = []
    for run_, flat in zip(runs, flats):
        head = {"run": str(run_.folder.relative_to(root)) if run_.folder != root else ".",
                **{k: getattr(run_.config, k) for k in KEY_COLUMNS[1:]},
                **{k: flat.get(k) for k in varying}, "config_hash": config_hash(run_.config)}
        if per == "run":
            rows.append({**head, **{k: v for k, v in run_.summary.items() if not isinstance(v, dict)
                                    and k not in head}})
        else:
            rows += [{**head, **record} for record in run_.records]
    return _frame(rows) if frame else rows


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in identity.items() if k != "options"}
    for namespace, opts in identity.get("options", {}).items():
        flat.update({f"{namespace}.{k}": v for k, v in opts.items()})
    return flat
