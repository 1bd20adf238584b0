"""The build floor: a Runtime (data, models, task, SGD settings, client-state store, upload pipeline, aggregator,
architectures) and an engine from a resolved RunConfig, in one place that both the main process
(``run.build_experiment``) and every sharded-engine worker call. Nothing here imports fedloom.run: the run loop
sits on top of this floor, the engines beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from fedloom.algorithms import ALGORITHMS, Algorithm
from fedloom.algorithms.tree import tree_bytes
from fedloom.config import RunConfig, component_options
from fedloom.data.base import DATASETS, PartitionSpec
from fedloom.data.federated import FederatedData, build_federated_data
from fedloom.engines.base import ENGINES, Engine, EngineOptions
from fedloom.engines.context import Architectures, Runtime
from fedloom.engines.infobatch import build_local_training
from fedloom.engines.local_sgd import SGDConfig
from fedloom.engines.state_store import ClientStateStore, make_store
from fedloom.errors import ConfigError
from fedloom.models import MODELS, build_model, default_model_for
from fedloom.models.base import InitParams, SplitModel
from fedloom.models.families import check_homogeneous_heads
from fedloom.models.families.federation import build_family_models, client_labels, describe
from fedloom.pipeline.build import build_aggregator, build_pipeline
from fedloom.registry import canonical
from fedloom.tasks import TASKS

import fedloom.data.datasets  # noqa: F401  (registration)
import fedloom.data.partitioners  # noqa: F401  (registration)


@dataclass(frozen=True)
class BuiltRuntime:
    """What ``build_runtime`` makes: the config with its model names and model options filled in, the
    algorithm (its options dataclass) and the runtime."""

    config: RunConfig
    algorithm: Algorithm
    runtime: Runtime


def build_runtime(cfg: RunConfig, data: Optional[FederatedData] = None,
                  device: Optional[torch.device] = None) -> BuiltRuntime:
    """The one constructor of a Runtime from a resolved config. ``device`` defaults to ``cfg.device`` resolved,
    ``data`` to the federation loaded (from the partition cache) onto it. Options that must fit the model are
    checked here, as soon as the models exist."""
    device = resolve_device(cfg.device) if device is None else device
    data = load_data(cfg, device) if data is None else data
    cfg, models = build_models(cfg, data, device)
    model, init_params = models[0]
    architectures = federation_architectures(cfg, models, data.num_clients)
    task = TASKS.get(getattr(DATASETS.get(cfg.dataset), "task", "classification"))()
    sgd = SGDConfig(lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.local_epochs, momentum=cfg.momentum,
                    weight_decay=cfg.weight_decay, drop_last=cfg.drop_last, lr_decay=cfg.lr_decay)
    local_training = build_local_training(cfg.options, cfg.rounds, cfg.join_ratio, data.num_clients,
                                          cfg.local_epochs)
    if local_training is not None and cfg.drop_last:
        raise ConfigError("--drop-last cannot be combined with a local-training schedule (InfoBatch): its pruned "
                          "epochs are not whole batches of the client's data; leave one of them out")
    algorithm = component_options(ALGORITHMS, cfg.algorithm, cfg)
    for _, params in models:
        algorithm.validate_for_model(params)  # options that must fit the model (fedala.layer_idx...)
    if architectures is not None and algorithm.needs_homogeneous_head:  # declared on the class, checked once
        check_homogeneous_heads(list(architectures.models), algorithm.registry_name, describe(cfg))
    if architectures is not None and algorithm.needs_common_feature_dim:
        widths = {name: int(m.feature_dim) for name, m in zip(architectures.names, architectures.models)}
        if len(set(widths.values())) > 1:
            raise ConfigError(f"{algorithm.registry_name} compares features across clients, so every architecture "
                              f"needs the same feature width; {describe(cfg)} gives {widths} (set the models' "
                              f"widths equal, e.g. --mlp.hidden, --cnn.feature-dim, or a family's feature-dim)")
    if architectures is not None and algorithm.shared_architecture:
        raise ConfigError(f"{describe(cfg)} gives clients different architectures, but "
                          f"{algorithm.registry_name} exchanges model parameters, which needs one architecture for "
                          f"every client; use one model, or an algorithm for heterogeneous models (e.g. local)")
    # sized by the largest architecture: a family's first member (HtFE-img-8: the 4-layer CNN) can be 60x smaller
    store = client_store(cfg, algorithm, max((p for _, p in models), key=tree_bytes), data.num_clients, device)
    runtime = Runtime(model=model, task=task, data=data, sgd=sgd, seed=cfg.seed, device=device,
                      store=store, init_params=init_params, total_rounds=cfg.rounds, precision=cfg.precision,
                      eval_batch_size=cfg.eval_batch_size or (256 if device.type == "cpu" else 4096),
                      uploads=(uploads := build_pipeline(cfg, data.num_clients, data.input_shape,
                                                         data.num_classes, data.dataset.x.dtype)),
                      aggregator=build_aggregator(cfg, algorithm, data.num_clients, uploads),
                      architectures=architectures,
                      local_training=local_training,
                      compile=cfg.compile)
    return BuiltRuntime(cfg, algorithm, runtime)


def build_engine(cfg: RunConfig, runtime: Runtime, engine: Optional[str] = None) -> Engine:
    """The engine ``engine`` (default: the config's) over ``runtime``, with the config's engine options."""
    return ENGINES.get(engine or cfg.engine)(runtime, engine_options(cfg))


def engine_options(cfg: RunConfig) -> EngineOptions:
    return EngineOptions(slots=cfg.pack_size, workers=cfg.workers or os.cpu_count() or 1,
                         worker_engine=cfg.worker_engine, worker_timeout=cfg.worker_timeout, run_config=cfg)


# ------------------------------------------------------------------------------------------------ device, data
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available; use --device cpu or auto")
    return torch.device(name)


def partition_spec(cfg: RunConfig) -> PartitionSpec:
    return PartitionSpec(name=cfg.partition, num_clients=cfg.clients, alpha=cfg.alpha,
                         classes_per_client=cfg.classes_per_client, balanced=cfg.balanced,
                         min_samples=cfg.min_samples, seed=cfg.data_seed,
                         extra={"batch_size": cfg.batch_size} if cfg.min_samples is None else {},
                         shards_per_client=cfg.shards_per_client, quantity_dist=cfg.quantity_dist,
                         size_alpha=cfg.size_alpha, sigma=cfg.sigma, base_partition=cfg.base_partition,
                         feature_shift=cfg.feature_shift, domains=cfg.domains, shift_strength=cfg.shift_strength)


def load_data(cfg: RunConfig, device: torch.device) -> FederatedData:
    data = build_federated_data(
        cfg.dataset, cfg.options.get(cfg.dataset, {}), partition_spec(cfg), train_ratio=cfg.train_ratio,
        data_dir=Path(cfg.data_dir) if cfg.data_dir else None,
        cache_dir=Path(cfg.cache_dir) if cfg.cache_dir else None, data_seed=cfg.data_seed,
        test_split=cfg.test_split, partition_file=Path(cfg.partition_file) if cfg.partition_file else None)
    return data.to(device)


# ------------------------------------------------------------------------------------------------ models
def model_names(spec: Optional[str]) -> list[str]:
    """``--model cnn,mlp`` → ``["cnn", "mlp"]`` (canonical; client i gets the (i mod len)-th)."""
    if not spec:
        return []
    names = [part.strip() for part in spec.split(",")]
    if any(not name for name in names):
        raise ConfigError(f"--model {spec!r}: empty name in the list (use e.g. --model cnn,mlp)")
    return [canonical(MODELS.get(name).registry_name) for name in names]


def build_models(cfg: RunConfig, data: FederatedData,
                 device: torch.device) -> tuple[RunConfig, list[tuple[SplitModel, InitParams]]]:
    """Every distinct model of the run (in order of first appearance), each with its initial parameters from
    the run seed's model-init stream; the config gets the model names and their resolved options."""
    vocab = data.dataset.vocab_size  # token datasets: the text models size their embedding from it
    if cfg.model_family:  # --model-family: the family's distinct members (models/families)
        return build_family_models(cfg, data.input_shape, data.num_classes, vocab, device)
    names = model_names(cfg.model) or [default_model_for(data.input_shape, vocab, data.num_classes)]
    cfg = dataclasses.replace(cfg, model=",".join(names))
    built = []
    for name in dict.fromkeys(names):
        model_options = dataclasses.asdict(component_options(MODELS, name, cfg))
        cfg = dataclasses.replace(cfg, options={**cfg.options, name: model_options})
        model = build_model(name, model_options, data.input_shape, data.num_classes, cfg.seed,
                            vocab_size=vocab).to(device)
        model.requires_grad_(False)  # the template's own tensors are never trained
        init_params = InitParams({n: p.detach().clone() for n, p in model.named_parameters()}, cfg.seed,
                                 model)  # knows its seed: algorithms draw extra modules from it
        built.append((model, init_params))
    return cfg, built


def federation_architectures(cfg: RunConfig, models: list[tuple[SplitModel, InitParams]],
                             num_clients: int) -> Optional[Architectures]:
    """None when every client has the same model; else which architecture each client has."""
    names = client_labels(cfg) if cfg.model_family else model_names(cfg.model)
    distinct = list(dict.fromkeys(names))
    if len(distinct) < 2:
        return None
    arch_of = tuple(distinct.index(names[client % len(names)]) for client in range(num_clients))
    return Architectures(tuple(distinct), tuple(m for m, _ in models), tuple(p for _, p in models), arch_of)


# ------------------------------------------------------------------------------------------------ client states
def client_store(cfg: RunConfig, algorithm: Algorithm, init_params: dict, num_clients: int,
                 device: torch.device) -> ClientStateStore:
    """The configured store; ``auto`` measures one client's initial state and goes to disk when every client
    keeping one would take more than a quarter of physical memory."""
    state_bytes = tree_bytes(algorithm.init_client_state(init_params, 0))
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    root = store_root(cfg)
    return make_store(cfg.store, cfg.store_dtype, root, device, state_bytes, num_clients, budget)


def store_root(cfg: RunConfig) -> Path:
    """Where a disk store keeps this run's client states: inside the run folder, or, with ``--store-dir``, in a
    subfolder keyed by the run folder's absolute path, so that no other run ever reads them."""
    out = Path(cfg.out or ".")
    if not cfg.store_dir:
        return out / "client_states"
    key = hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]
    return Path(cfg.store_dir) / f"{out.resolve().name or 'run'}-{key}"


def check_store_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--store-dir {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--store-dir {path} cannot be created: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--store-dir {path} is not writable")
