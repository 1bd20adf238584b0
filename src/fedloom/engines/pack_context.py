"""PackContext: the ClientContext of a vectorized engine, standing for n clients at once.

An algorithm's ``client_update``/``eval_params`` run unchanged: per-client values (the state, personal
broadcasts, ``local_sgd`` results, ``num_train_samples``) carry a leading client axis, shared values (the
broadcast) do not, and elementwise tree maths broadcasts between them. ``local_sgd`` trains the whole pack in
lockstep (PackSGD); ``per_client`` vmaps reductions. What cannot be batched this way (a client id, an explicit
index array, a raw generator) raises NotVectorizable, and the engine runs the algorithm serially instead.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch
from torch.func import vmap

from fedloom.algorithms.tree import Params, Tree, tree_index, tree_map
from fedloom.engines.context import CarryLoss, FeatureFn, Runtime
from fedloom.engines.local_sgd import BatchLoss, ExtraLoss, GradCorrection, SGDConfig, StepDraws
from fedloom.engines.pack_sgd import (BatchedModel, PackHooks, PackJob, PackSGD, SlotUsage, client_batches,
                                      planned_job, poison_rows)
from fedloom.pipeline.privacy.sample import uses_sample_dp
from fedloom.seeding import torch_generator


class NotVectorizable(Exception):
    """Raised inside a pack when an algorithm uses something only the serial engine supports."""


@dataclass(frozen=True)
class PerClient:
    """One value per client of a pack, in pack order (``PackContext.each_client``): what cannot carry a
    client axis, e.g. each client's Compact upload; the engine takes it apart client by client."""

    values: tuple[Any, ...]

    def __getitem__(self, position: int) -> Any:
        return self.values[position]


class PackContext:
    def __init__(self, runtime: Runtime, client_ids: list[int], round_: int, slots: int,
                 usage: Optional[SlotUsage] = None) -> None:
        self.runtime, self.client_ids, self.round, self.slots = runtime, client_ids, round_, slots
        self.usage = usage
        self.n = len(client_ids)
        #: the local-training seam's state and counters per client (the engine loads and saves the states)
        self.training_states: dict[int, Any] = {}
        self.training_metrics: dict[int, dict[str, float]] = {}
        #: the round's broadcast parameters (shared by the pack): the reference for entries that are not the
        #: model's (VHL's extra head), to tell a per-client copy from the shared one by its shape
        self.shared_params: Params = {}

    # ------------------------------------------------------------------ what differs from ClientContext
    @property
    def client_id(self) -> int:
        raise NotVectorizable("ctx.client_id")

    @property
    def train_indices(self) -> torch.Tensor:
        raise NotVectorizable("ctx.train_indices")

    @property
    def test_indices(self) -> torch.Tensor:
        raise NotVectorizable("ctx.test_indices")

    def generator(self, purpose: str, round_: Optional[int] = None) -> torch.Generator:
        raise NotVectorizable(f"ctx.generator({purpose!r})")

    def data(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotVectorizable("ctx.data (an algorithm's own loop over a client's samples)")

    def local_sgd_carry(self, params: Params, carry: Any, batch_loss: CarryLoss,
                        **options: Any) -> tuple[Params, Any, dict[str, torch.Tensor]]:
        """ClientContext.local_sgd_carry for the pack: every client threads its own carry through its own
        batches (PackSGD keeps one per slot) and the final carries come back with the client axis. The initial
        ``carry`` is the start every client shares (a constant such as zeros, without the client axis; a start
        per client cannot be told from a shared one by its shape) and keeps its shapes from batch to batch."""
        if carry is None:
            raise NotVectorizable("ctx.local_sgd_carry without an initial carry")
        start = tree_map(lambda leaf: leaf.expand(self.n, *leaf.shape).clone(), carry)
        draws = options.pop("draws", None)
        hooks = PackHooks(options.pop("extra_loss", None), None, options.pop("grad_correction", None),
                          options.pop("trainable", None), carry_loss=batch_loss, draws=draws,
                          exact_partial=options.pop("coupled", False))
        trained, metrics = self._local_sgd(params, hooks, start, **options)
        return trained, metrics.pop("carry"), metrics

    @property
    def init_params(self) -> Params:
        return self.runtime.init_params

    @property
    def num_train_samples(self) -> torch.Tensor:
        return torch.tensor([float(self.runtime.data.train_idx[c].shape[0]) for c in self.client_ids])

    def train_label_counts(self) -> torch.Tensor:
        """[n, classes]: each client's training label counts (ClientContext.train_label_counts, stacked)."""
        y, classes = self.runtime.data.dataset.y, self.runtime.data.num_classes
        return torch.stack([torch.bincount(y[self.runtime.data.train_idx[c]], minlength=classes)
                            for c in self.client_ids]).to(torch.float32)

    def mean_loss(self, params: Params, indices: torch.Tensor) -> torch.Tensor:
        raise NotVectorizable("ctx.mean_loss")

    @property
    def total_rounds(self) -> int:
        if self.runtime.total_rounds is None:
            raise RuntimeError("this runtime was built without total_rounds")
        return self.runtime.total_rounds

    # ------------------------------------------------------------------ shared with ClientContext
    @property
    def sgd(self) -> SGDConfig:
        return self.runtime.sgd.at_round(self.round)

    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        return self.runtime.apply(params, x, part)

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.runtime.task.per_sample_loss(outputs, targets)

    def per_client(self, fn: Callable[..., Any], *trees: Any) -> Any:
        return vmap(fn)(*trees)

    def local_sgd(self, params: Params, *, epochs: Optional[int] = None, lr: Optional[float] = None,
                  purpose: str = "train", indices: Optional[torch.Tensor] = None,
                  extra_loss: Optional[ExtraLoss] = None, batch_loss: Optional[BatchLoss] = None,
                  grad_correction: Optional[GradCorrection] = None,
                  trainable: Optional[Callable[[str], bool]] = None,
                  aux: Any = None, batch_size: Optional[int] = None, steps_per_batch: int = 1,
                  after_batch: Any = None, draws: Optional[StepDraws] = None,
                  coupled: bool = False) -> tuple[Params, dict[str, torch.Tensor]]:
        hooks = PackHooks(extra_loss, batch_loss, grad_correction, trainable, draws=draws, exact_partial=coupled)
        return self._local_sgd(params, hooks, None,
                               epochs=epochs, lr=lr, purpose=purpose, indices=indices, aux=aux,
                               batch_size=batch_size, steps_per_batch=steps_per_batch, after_batch=after_batch)

    def _local_sgd(self, params: Params, hooks: PackHooks, carry: Any, *, epochs: Optional[int] = None,
                   lr: Optional[float] = None, purpose: str = "train", indices: Optional[torch.Tensor] = None,
                   aux: Any = None, batch_size: Optional[int] = None, steps_per_batch: int = 1,
                   after_batch: Any = None) -> tuple[Params, dict[str, Any]]:
        """PackSGD over the pack with ``hooks`` (a carry loss's final carries come back as ``metrics["carry"]``)."""
        if indices is not None:
            raise NotVectorizable("local_sgd(indices=...)")
        if steps_per_batch != 1 or after_batch is not None:
            raise NotVectorizable("local_sgd(steps_per_batch=..., after_batch=...)")
        if uses_sample_dp(self.runtime.uploads):
            raise NotVectorizable("--transform sample-dp (per-sample gradients inside a pack)")
        cfg = self.sgd
        overrides = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
        cfg = replace(cfg, **{key: value for key, value in overrides.items() if value is not None})
        stacked = self.stacked_names(params)
        data = self.runtime.data
        jobs = [self._job(pos, cid, cfg, purpose) for pos, cid in enumerate(self.client_ids)]
        if hooks.draws is not None:  # each client's own stream, as ClientContext.local_sgd draws from it
            for job in jobs:
                job.draw_generator = torch_generator(self.runtime.seed, self.round, job.client_id, hooks.draws.purpose)
        runner = PackSGD(self.runtime.per_sample_loss, self.runtime.data.dataset.x, self.runtime.data.dataset.y,
                         self.slots, self.usage, self._batched_model(params))
        result = runner.run(params, stacked, jobs, self.n, cfg, hooks, aux, carry)
        for job in jobs:
            if job.plan is not None:  # the seam's new state and counters, as ClientContext.local_sgd keeps them
                self.training_states[job.client_id] = job.plan.state()
                counts = self.training_metrics.setdefault(job.client_id, {})
                for key, value in job.plan.metrics().items():
                    counts[key] = counts.get(key, 0.0) + value
        return result

    def _job(self, position: int, client_id: int, cfg: SGDConfig, purpose: str) -> PackJob:
        """One client's batches from its own (seed, round, client, purpose) streams, as the serial loop draws them."""
        data, seed = self.runtime.data, self.runtime.seed
        generator = torch_generator(seed, self.round, client_id, purpose)
        poison = self.runtime.uploads.poison_for(client_id, data.train_idx[client_id], data.num_classes,
                                                 data.input_shape)
        schedule = self.runtime.local_training
        if schedule is None:
            return PackJob(position, client_id, client_batches(data.train_idx[client_id], cfg, generator), poison)
        plan = schedule.plan(self.training_states.get(client_id), data.train_idx[client_id],
                             torch_generator(seed, self.round, client_id, f"infobatch-{purpose}"))
        return planned_job(position, client_id, plan, cfg, generator, poison)

    @torch.no_grad()
    def class_sums(self, params: Params, fn: FeatureFn, classes: int,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, C, D], [n, C]): ClientContext.class_sums of every client of the pack, in lockstep: step t runs
        each client's t-th batch (the same split of its training data) through ``fn`` vmapped over the pack,
        shorter batches padded and the padding left out of the sums, which are added in each client's order."""
        data = self.runtime.data
        batches = [data.train_idx[client_id].split(batch_size) for client_id in self.client_ids]
        if any(len(own) == 0 for own in batches):
            raise ValueError("a client without training data in a class-statistics pass")
        stacked = self.stacked_names(params)
        mapped = vmap(fn, in_dims=({name: 0 if name in stacked else None for name in params}, 0))
        sums: Optional[torch.Tensor] = None
        counts: Optional[torch.Tensor] = None
        for step in range(max(len(own) for own in batches)):
            x, y, real = self._pass_batch(batches, step)
            out = mapped(params, x).float()
            if sums is None:
                sums = torch.zeros(self.n * classes, out.shape[-1], device=out.device)
                counts = torch.zeros(self.n * classes, device=out.device)
            rows = (torch.arange(self.n, device=y.device).unsqueeze(1) * classes + y)[real]
            sums.index_add_(0, rows.to(out.device), out[real.to(out.device)])
            counts.index_add_(0, rows.to(out.device), torch.ones(rows.shape[0], device=out.device))
        return sums.view(self.n, classes, -1), counts.view(self.n, classes)

    def _pass_batch(self, batches: list[tuple[torch.Tensor, ...]],
                    step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs [n, B, ...], targets [n, B] and the real-sample mask [n, B] of every client's ``step``-th batch
        (a client with fewer batches contributes padding only); malicious clients' samples poisoned as
        ClientContext.data poisons them."""
        data = self.runtime.data
        width = max(own[step].shape[0] for own in batches if step < len(own))
        idx = torch.zeros(self.n, width, dtype=torch.long, device=batches[0][0].device)
        real = torch.zeros(self.n, width, dtype=torch.bool, device=idx.device)
        for position, own in enumerate(batches):
            if step < len(own):
                idx[position, : own[step].shape[0]] = own[step]
                real[position, : own[step].shape[0]] = True
        x, y = data.dataset.x[idx], data.dataset.y[idx]
        sizes = [own[step].shape[0] if step < len(own) else 0 for own in batches]
        poisons = [self.runtime.uploads.poison_for(client_id, data.train_idx[client_id], data.num_classes,
                                                   data.input_shape) if size else None
                   for client_id, size in zip(self.client_ids, sizes)]
        poison_rows(poisons, idx, x, y, sizes)
        return x, y, real

    def each_client(self, fn: Callable[..., Any], *trees: Any) -> "PerClient":
        """``fn`` on each client's slice of ``trees`` (which carry the client axis), one client after another:
        for values a pack cannot stack (a wire message whose size depends on the client's data). The engine
        treats the result as one value per client (an upload goes through the upload pipeline per client)."""
        return PerClient(tuple(fn(*(tree_index(tree, position) for tree in trees)) for position in range(self.n)))

    def evaluate(self, params: Params, split: str = "test") -> dict[str, torch.Tensor]:
        raise NotVectorizable("ctx.evaluate inside a vectorized pack")

    def _batched_model(self, params: Params) -> Optional[BatchedModel]:
        """The model's hand-batched layers, when it has them and ``params`` are exactly the model's."""
        forward = getattr(self.runtime.model, "batched_forward", None)
        if forward is None or set(params) != set(self.runtime.init_params):
            return None
        return BatchedModel(self.runtime.at_precision(forward), self.runtime.task.per_sample_loss)

    # ------------------------------------------------------------------ helpers for the engine
    def stacked_names(self, params: Params) -> set[str]:
        """Which entries of a model-parameter dict carry the client axis (judged against the model)."""
        stacked = set()
        for name, value in params.items():
            reference = self._reference(name)
            if reference is None:
                raise NotVectorizable(f"local_sgd over a parameter '{name}' that is neither the model's nor broadcast")
            if value.dim() == reference.dim() + 1:
                stacked.add(name)
        return stacked

    def _reference(self, name: str) -> Optional[torch.Tensor]:
        """The shared (client-axis-free) tensor an entry named ``name`` is judged against, if any."""
        reference = self.runtime.init_params.get(name)
        return self.shared_params.get(name) if reference is None else reference

    def ensure_stacked(self, tree: Optional[Tree]) -> Optional[Tree]:
        """Give every leaf of an upload/state the client axis (expanding leaves shared by all clients)."""
        if tree is None:
            return None
        if isinstance(tree, dict):
            return {k: self._leaf_or_tree(k, v) for k, v in tree.items()}
        return self._expand(tree, None)

    def _leaf_or_tree(self, name: str, value: Any) -> Any:
        if isinstance(value, dict):
            return self.ensure_stacked(value)
        return self._expand(value, self._reference(name))

    def _expand(self, leaf: torch.Tensor, reference: Optional[torch.Tensor]) -> torch.Tensor:
        if reference is not None:
            shared = leaf.dim() == reference.dim()
        else:
            shared = leaf.dim() == 0 or leaf.shape[0] != self.n
        return leaf.expand(self.n, *leaf.shape) if shared else leaf
