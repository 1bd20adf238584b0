"""Optional experiment trackers (TensorBoard, MLflow, Weights & Biases, plain CSV) behind one small interface.

Off by default (``--trackers tensorboard,mlflow,wandb,csv`` turns them on). They are mirrors for people who
live in those tools: the run folder stays the source of truth, and a tracker never changes what is written
there (``csv`` adds its own file, metrics.csv). Each backend but csv is an optional extra (``pip install
'fedloom[tensorboard]'`` / ``'fedloom[mlflow]'`` / ``'fedloom[wandb]'``); asking for one that is not installed
fails before the run folder is created, with the install command in the message. W&B follows its own
environment variables (``WANDB_MODE=offline`` to log without an account, ``WANDB_PROJECT``, default
"fedloom").
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Callable, Optional

from fedloom.errors import ConfigError
from fedloom.extras import require
from fedloom.registry import Registry, canonical
from fedloom.tracking import atomic_write_text

TRACKERS: Registry[type] = Registry("tracker")


class Tracker:
    """The interface: ``start`` once, ``log`` every evaluated round, ``finish`` once (even on failure)."""

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        """Open the sink for the run in ``run_dir`` with its resolved config."""

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        """One metrics.jsonl record."""

    def finish(self, summary: Optional[dict[str, Any]]) -> None:
        """Close the sink; ``summary`` is None when the run failed."""


def _require(module: str, extra: str) -> Any:
    """The tracker's package, imported only when the tracker is chosen (fedloom.extras.require)."""
    return require(module, extra, f"tracker '{extra}'")


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a record (trackers reject NaN and strings)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """``options`` tables flattened to ``name.field`` keys, None values dropped."""
    flat = {k: v for k, v in config.items() if k != "options" and v is not None}
    for namespace, opts in config.get("options", {}).items():
        flat.update({f"{namespace}.{k}": v for k, v in opts.items() if v is not None})
    return flat


@TRACKERS.register("tensorboard")
class TensorBoardTracker(Tracker):
    """Scalars per round into ``RUN_DIR/tensorboard`` (open with ``tensorboard --logdir RUN_DIR``)."""

    def __init__(self) -> None:
        _require("tensorboard", "tensorboard")
        self._module = _require("torch.utils.tensorboard", "tensorboard")
        self._writer: Any = None

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._writer = self._module.SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self._writer.add_text("config", "\n".join(f"    {k} = {v}" for k, v in flat_config(config).items()))

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        for key, value in numeric(metrics).items():
            if key != "round":
                self._writer.add_scalar(key, value, global_step=round_)

    def finish(self, summary: Optional[dict[str, Any]]) -> None:
        if self._writer is not None:
            self._writer.close()


@TRACKERS.register("mlflow")
class MLflowTracker(Tracker):
    """An MLflow run (experiment ``fedloom``, at ``$MLFLOW_TRACKING_URI``): params, metrics per round, summary."""

    def __init__(self) -> None:
        self._mlflow = _require("mlflow", "mlflow")

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._mlflow.set_experiment("fedloom")
        self._mlflow.start_run(run_name=run_dir.name)
        self._mlflow.log_params({k: str(v)[:250] for k, v in flat_config(config).items()})
        self._mlflow.set_tag("fedloom.run_dir", str(run_dir.resolve()))

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        values = {k: v for k, v in numeric(metrics).items() if k != "round"}
        self._mlflow.log_metrics(values, step=round_)

    def finish(self, summary: Optional[dict[str, Any]]) -> None:
        if summary is not None:
            self._mlflow.log_metrics({f"summary.{k}": v for k, v in numeric(summary).items()})
        self._mlflow.end_run(status="FINISHED" if summary is not None else "FAILED")


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """A Weights & Biases run (project ``$WANDB_PROJECT`` or "fedloom", named after the run folder, its files
    under ``RUN_DIR/wandb``): the config, metrics per round (step = round) and the summary."""

    def __init__(self) -> None:
        self._wandb = _require("wandb", "wandb")
        self._run: Any = None

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        try:
            self._run = self._wandb.init(project=os.environ.get("WANDB_PROJECT", "fedloom"), name=run_dir.name,
                                         dir=str(run_dir), config=flat_config(config))
        except Exception as exc:  # not logged in, no network...: one line, not wandb's traceback
            raise ConfigError(f"tracker 'wandb' could not start a run: {exc} (log in with 'wandb login', or set "
                              "WANDB_MODE=offline to log locally)") from None

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        self._run.log({k: v for k, v in numeric(metrics).items() if k != "round"}, step=round_)

    def finish(self, summary: Optional[dict[str, Any]]) -> None:
        if self._run is None:
            return
        if summary is not None:
            self._run.summary.update({f"summary.{k}": v for k, v in numeric(summary).items()})
        self._run.finish(exit_code=0 if summary is not None else 1)
        self._run = None


@TRACKERS.register("csv")
class CSVTracker(Tracker):
    """``RUN_DIR/metrics.csv``: metrics.jsonl as a spreadsheet (one row per evaluated round, one column per
    metric, blank where a round lacks one). Rewritten whole at every round (a few KB), so the columns are the
    union of every round's keys; a resumed run keeps the rows before the round it restarts from."""

    NAME = "metrics.csv"

    def __init__(self) -> None:
        self._path: Optional[Path] = None
        self._rows: list[dict[str, Any]] = []

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        self._path = run_dir / self.NAME
        if self._path.is_file():
            with open(self._path, newline="") as handle:
                self._rows = list(csv.DictReader(handle))

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        self._rows = [r for r in self._rows if int(r["round"]) < round_] + [dict(metrics, round=round_)]
        columns = ["round"] + sorted({k for r in self._rows for k in r} - {"round"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        atomic_write_text(self._path, buffer.getvalue())


def make_trackers(spec: Optional[str]) -> list[Tracker]:
    """Trackers from a comma-separated list of names ('' or None: none)."""
    names = [canonical(n) for n in (spec or "").split(",") if n.strip() and canonical(n) != "none"]
    return [TRACKERS.get(name)() for name in dict.fromkeys(names)]


class TrackerGroup:
    """Fans the run's events out to every tracker."""

    def __init__(self, trackers: list[Tracker]) -> None:
        self.trackers = trackers

    def start(self, run_dir: Path, config: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.start(run_dir, config)

    def log(self, round_: int, metrics: dict[str, Any]) -> None:
        for tracker in self.trackers:
            tracker.log(round_, metrics)

    def wrap(self, progress: Optional[Callable[[int, dict], Any]]) -> Optional[Callable[[int, dict], Any]]:
        """The run's per-round callback, also feeding every tracker (unchanged when there are none)."""
        if not self.trackers:
            return progress

        def both(round_: int, record: dict) -> Any:
            self.log(round_, record)
            return progress(round_, record) if progress else None  # False from the callback: stop early

        return both

    def finish(self, summary: Optional[dict[str, Any]], quiet: bool = False) -> None:
        """Close every tracker; ``quiet`` (on the failure path) keeps a tracker's own error from hiding the
        error that ended the run."""
        for tracker in self.trackers:
            try:
                tracker.finish(summary)
            except Exception:
                if not quiet:
                    raise
