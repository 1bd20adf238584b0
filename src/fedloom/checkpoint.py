"""Exact checkpoint/resume of a run.

Every random draw in fedloom derives from (seed, round, client, purpose) (``fedloom.seeding``), so there is no
RNG state to save: a run is fully described by its config plus what the loop carries between rounds — the
server's state and last broadcast, the client-state store, the round index, the metrics so far, the byte
totals and the per-client tables needed for ``clients.csv``. Restoring those and continuing at round k+1 gives
a metrics.jsonl byte-identical to the uninterrupted run.

File format (``RUN_DIR/checkpoint.pt``): a magic line, one JSON header line (round, config hash and identity,
SHA-256 and size of the payload) and a ``torch.save`` payload of plain dicts and tensors. The file is written
to a temporary name, fsynced and renamed over the old one, so a kill at any moment leaves the previous
checkpoint valid; the checksum turns a truncated or damaged file into a clear error instead of a silent
wrong resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from fedloom.algorithms.base import Broadcast, ServerResult, ServerState
from fedloom.config import RunConfig, make_component
from fedloom.errors import FedloomError
from fedloom.models import MODELS
from fedloom.models.families import FAMILIES
from fedloom.registry import canonical
from fedloom.tracking import RunFolder

CHECKPOINT_NAME = "checkpoint.pt"
MAGIC = b"FEDLOOM-CHECKPOINT 1\n"
#: Fields that say where or how a run executes, not what it computes: they may change between the original
#: run and its resume (or between two grid invocations) without changing a single metric (the evaluation chunk
#: size can change the last bits of a loss sum, never a count).
NON_IDENTITY_FIELDS = frozenset({"out", "overwrite", "quiet", "threads", "checkpoint_every", "trackers",
                                 "data_dir", "cache_dir", "eval_batch_size", "malloc",
                                 "keep_client_states", "worker_timeout", "worker_start", "ray_address",
                                 "ray_gpus_per_worker",
                                 # what a diverging run does: a run that completes computes the same either way
                                 "on_divergence"})
#: Fields added after run folders already existed, left out of the identity while they hold their default, so
#: that adding an option does not rename every existing run folder or invalidate every checkpoint. A dotted
#: name reaches into a component's option table ("options.<component>.<option>").
OMITTED_AT_DEFAULT = {"precision": "float32", "options.pfedme.evaluate": "personal", "transform": None,
                      "aggregator": "mean", "attack": None, "pattern": "star", "topology": "ring", "model_family": None,
                      "partition_file": None, "ray_reduce": "ordered", "compile": False,
                      "drop_last": False, "lr_decay": 1.0,
                      "options.snowball.vae_fused": False}


class CheckpointError(FedloomError):
    """A checkpoint that cannot be used: corrupted, or written by a different configuration."""


# ------------------------------------------------------------------------------------------------ identity
def config_identity(cfg: RunConfig) -> dict[str, Any]:
    """The part of a resolved config that determines the results (JSON-ready, sorted keys)."""
    identity = {k: v for k, v in sorted(cfg.to_dict().items()) if k not in NON_IDENTITY_FIELDS}
    for dotted, default in OMITTED_AT_DEFAULT.items():
        *path, name = dotted.split(".")
        table = identity
        for key in path:
            table = table.get(key) if isinstance(table, dict) else None
        if isinstance(table, dict) and name in table and table[name] == default:
            del table[name]  # to_dict() built fresh dicts, so this never edits the config itself
    _drop_model_defaults(identity)
    return identity


def _drop_model_defaults(identity: dict[str, Any]) -> None:
    """Leave out model and model-family options at their defaults. Building the models fills the chosen
    models' whole tables into the config (so config.toml shows them), while a planned config holds only the
    options given: without this a run's config.toml read back would hash unlike its grid's plan. No committed
    grid gives a model option at its default, so no existing run folder changes its name."""
    options = identity.get("options")
    if not isinstance(options, dict):
        return
    chosen = [(MODELS, name) for name in str(identity.get("model") or "").split(",") if name.strip()]
    chosen += [(FAMILIES, identity["model_family"])] if identity.get("model_family") else []
    for registry, name in chosen:
        key = canonical(name.strip())
        table = options.get(key)
        if not isinstance(table, dict) or key not in registry:
            continue
        try:
            defaults = _plain(dataclasses.asdict(make_component(registry, key, {})))
        except (FedloomError, TypeError):  # a component without a full default (hf needs its path): keep all
            continue
        kept = {k: v for k, v in table.items() if k not in defaults or _plain(v) != defaults[k]}
        if kept:
            options[key] = kept
        else:
            del options[key]


def _plain(value: Any) -> Any:
    """JSON-shaped, as the hash sees it: a tuple default and a list read back from TOML compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def config_hash(cfg: RunConfig) -> str:
    """SHA-256 of :func:`config_identity`; equal hashes mean identical metrics.jsonl."""
    text = json.dumps(config_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the entries that differ between two identity dicts (one level of option tables)."""
    keys: list[str] = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += [f"{key}.{k}" for k in differing_keys(left, right)]
        elif left != right:
            keys.append(key)
    return keys


# ------------------------------------------------------------------------------------------------ state
@dataclass
class RunProgress:
    """What the round loop carries from one round to the next; a checkpoint is exactly this plus the
    client-state store."""

    server: ServerResult
    round: int
    records: list[dict[str, Any]]
    per_client: dict[int, dict[str, float]]
    last_train: dict[int, dict[str, float]]
    totals: dict[str, int]
    wall_seconds: float = 0.0  # training wall time spent in earlier processes
    #: the code of each earlier process that trained this run: {"from_round", "git_commit", "git_dirty"}
    code: list[dict[str, Any]] = field(default_factory=list)


def _server_to_plain(server: ServerResult) -> dict[str, Any]:
    state, cast = server.state, server.broadcast
    return {"state": {"params": state.params, "round": state.round, "extra": state.extra},
            "broadcast": {"params": cast.params, "extra": cast.extra, "personal": cast.personal,
                          **({"wire": cast.wire} if cast.wire is not None else {})},
            "metrics": dict(server.metrics)}


def _server_from_plain(plain: dict[str, Any]) -> ServerResult:
    state, cast = plain["state"], plain["broadcast"]
    return ServerResult(ServerState(params=state["params"], round=state["round"], extra=state["extra"]),
                        Broadcast(params=cast["params"], extra=cast["extra"], personal=cast["personal"],
                                  wire=cast.get("wire")),
                        plain["metrics"])


# ------------------------------------------------------------------------------------------------ writing
def _fsync_replace(tmp: str, target: Path) -> None:
    os.replace(tmp, target)
    try:  # make the rename itself durable; not every platform can open a directory
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(run_dir: Path, cfg: RunConfig, progress: RunProgress,
                    client_states: Iterable[tuple[int, Any]]) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically (temp file + fsync + rename)."""
    payload = {"format": 1, "server": _server_to_plain(progress.server), "round": progress.round,
               "client_states": dict(client_states), "records": progress.records,
               "per_client": progress.per_client, "last_train": progress.last_train,
               "totals": dict(progress.totals), "wall_seconds": progress.wall_seconds,
               "code": list(progress.code)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    header = {"round": progress.round, "config_hash": config_hash(cfg), "identity": config_identity(cfg),
              "sha256": hashlib.sha256(body).hexdigest(), "payload_bytes": len(body)}
    target = run_dir / CHECKPOINT_NAME
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{CHECKPOINT_NAME}.", suffix=".tmp")
    try:
        from fedloom.tracking import file_mode

        os.fchmod(fd, file_mode())  # like every file of the run folder (mkstemp alone gives 0600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + json.dumps(header, sort_keys=True, default=str).encode() + b"\n" + body)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_replace(tmp, target)
    except BaseException:  # an interrupted write leaves the previous checkpoint and no temporary file
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


# ------------------------------------------------------------------------------------------------ reading
def read_header(path: Path) -> tuple[dict[str, Any], bytes]:
    """The verified header and payload bytes; CheckpointError if the file is damaged."""
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a fedloom checkpoint or is corrupted (bad magic); "
                              f"delete it to restart the run from round 0")
    line, sep, body = raw[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line) if sep else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("payload_bytes") != len(body) \
            or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted (truncated or checksum mismatch); "
                              f"delete it to restart the run from round 0")
    return header, body


def check_config(path: Path, header: dict[str, Any], cfg: RunConfig) -> None:
    """Refuse a checkpoint written by a different configuration, naming the keys that differ."""
    if header.get("config_hash") == config_hash(cfg):
        return
    written = dict(header.get("identity", {}))
    written["options"] = dict(written.get("options") or {})  # (a copy: the header is not edited)
    _drop_model_defaults(written)  # a checkpoint written before model defaults were left out of the identity
    if _plain(written) == _plain(config_identity(cfg)):
        return
    keys = differing_keys(header.get("identity", {}), config_identity(cfg)) or ["(unknown)"]
    raise CheckpointError(f"checkpoint {path} was written with a different config (differs in: "
                          f"{', '.join(keys)}); resume with the run's own config.toml or start a new run")


def load_checkpoint(run_dir: Path, cfg: RunConfig) -> tuple[RunProgress, dict[int, Any]]:
    """The verified progress and client states of ``run_dir/checkpoint.pt`` for config ``cfg``."""
    path = run_dir / CHECKPOINT_NAME
    header, body = read_header(path)
    check_config(path, header, cfg)
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # an algorithm kept a non-tensor object in its state; the checksum proved the bytes are ours
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)
    progress = RunProgress(server=_server_from_plain(payload["server"]), round=payload["round"],
                           records=payload["records"], per_client=payload["per_client"],
                           last_train=payload["last_train"], totals=payload["totals"],
                           wall_seconds=payload["wall_seconds"],
                           code=payload.get("code", []))  # (absent from checkpoints of before 2026-12-05)
    return progress, payload["client_states"]


def to_device(progress: RunProgress, states: dict[int, Any],
              device: torch.device) -> tuple[RunProgress, dict[int, Any]]:
    """Move the loaded tensors to the run's device (checkpoints are always read onto the CPU first)."""
    def move(tree: Any) -> Any:
        if isinstance(tree, torch.Tensor):
            return tree.to(device)
        if isinstance(tree, dict):
            return {k: move(v) for k, v in tree.items()}
        if isinstance(tree, (list, tuple)):
            return type(tree)(move(v) for v in tree)
        return tree

    server = _server_from_plain(move(_server_to_plain(progress.server)))
    return dataclasses.replace(progress, server=server), {cid: move(s) for cid, s in states.items()}


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_NAME).is_file()


def remove_checkpoint(run_dir: Path) -> None:
    """Drop the checkpoint once the run is complete (summary.json is the record from then on)."""
    (run_dir / CHECKPOINT_NAME).unlink(missing_ok=True)


def resume_config_raw(run_dir: Path) -> dict[str, Any]:
    """The raw config of a run folder (its resolved config.toml), for ``fedloom run --resume``."""
    from fedloom.config import load_toml
    from fedloom.errors import ConfigError

    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / "config.toml").is_file():
        raise ConfigError(f"--resume {run_dir}: no config.toml in it; is this a fedloom run folder?")
    if (run_dir / "summary.json").is_file():
        raise ConfigError(f"--resume {run_dir}: the run is already complete (summary.json exists)")
    return load_toml(run_dir / "config.toml")


def restore_point(run_dir: Path, cfg: RunConfig, engine: Any,
                  device: torch.device) -> Optional[RunProgress]:
    """Load the checkpoint of ``run_dir`` into ``engine`` and return where to continue; None when the folder
    has no checkpoint (the run restarts from round 0 in the same folder)."""
    if not has_checkpoint(run_dir):
        engine.runtime.store.clear()  # a restart from round 0: states of the killed attempt must not leak in
        return None
    progress, states = to_device(*load_checkpoint(run_dir, cfg), device)
    # exactly the checkpointed states: states saved after the checkpoint by the killed process are dropped
    # (the disk store is one folder shared with any worker processes, so the main process clears it for all)
    engine.runtime.store.clear()
    engine.restore_client_states(sorted(states.items()))
    return progress


# ------------------------------------------------------------------------------------------------ run folder
def rewind_run_folder(folder: RunFolder, progress: Optional[RunProgress]) -> None:
    """Make the run folder's logs match the checkpoint: metrics.jsonl is rewritten from the saved records
    (rows a killed process appended after its last checkpoint disappear), timings.jsonl keeps rounds up to
    the checkpoint, and a FAILED marker from the interrupted attempt is removed."""
    records = progress.records if progress else []
    folder.write_text("metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    timings = folder.path / "timings.jsonl"
    kept: list[str] = []
    if progress and timings.is_file():
        for line in timings.read_text().splitlines():
            try:
                if json.loads(line)["round"] <= progress.round:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a line cut by the kill: everything after it is newer than the checkpoint anyway
    folder.write_text("timings.jsonl", "".join(kept))
    (folder.path / "FAILED").unlink(missing_ok=True)


def open_for_resume(cfg: RunConfig, engine: Any, device: torch.device) -> tuple[RunFolder, Optional[RunProgress]]:
    """The existing run folder ``cfg.out`` and where to continue (None: from round 0). Nothing in the folder
    is touched until the checkpoint has been verified against ``cfg``."""
    folder = RunFolder.open_existing(Path(cfg.out or "."))  # locked: nobody else writes it from now on
    try:
        progress = restore_point(folder.path, cfg, engine, device)
        rewind_run_folder(folder, progress)
    except BaseException:
        folder.release()
        raise
    return folder, progress
