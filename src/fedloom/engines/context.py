"""Runtime (what an engine shares across clients) and ClientContext (an algorithm's only door to data,
the model and randomness while it runs one client)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

import torch

from fedloom.algorithms.base import Predictor
from fedloom.algorithms.tree import Params, tree_map
from fedloom.data.federated import FederatedData
from fedloom.errors import ConfigError
from fedloom.engines.local_sgd import (AfterBatch, BatchLoss, ExtraLoss, GradCorrection, LocalSGD, SGDConfig,
                                      StepDraws, with_draws)
from fedloom.pipeline.privacy.sample import sample_privacy
from fedloom.engines.state_store import ClientStateStore
from fedloom.models.apply import apply_with
from fedloom.models.base import SplitModel
from fedloom.pipeline.aggregators import Aggregator
from fedloom.pipeline.chain import UploadPipeline
from fedloom.seeding import torch_generator
from fedloom.tasks.base import Task


#: ``(params, x, y, aux, carry) -> (per-sample losses [B], new carry)`` (see ClientContext.local_sgd_carry)
CarryLoss = Callable[[Params, torch.Tensor, torch.Tensor, Any, Any], tuple[torch.Tensor, Any]]
#: ``(params, x) -> [B, D]``: a per-sample statistic of a model (features, logits) summed per class by class_sums
FeatureFn = Callable[[Params, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Architectures:
    """A federation of mixed architectures (``--model cnn,mlp``): client i trains and is scored with
    ``models[arch_of[i]]``, initialised with ``init_params[arch_of[i]]``."""

    names: tuple[str, ...]
    models: tuple[SplitModel, ...]
    init_params: tuple[Params, ...]
    arch_of: tuple[int, ...]


@dataclass
class Runtime:
    model: SplitModel  # a template whose own parameters are never trained; used via apply_with (functional_call)
    task: Task
    data: FederatedData  # tensors already on ``device``
    sgd: SGDConfig
    seed: int
    device: torch.device
    store: ClientStateStore
    init_params: Params
    eval_batch_size: int = 256
    precision: str = "float32"  # "bfloat16": forward passes under autocast
    total_rounds: Optional[int] = None  # the run's --rounds (schedules over the run, final fine-tuning)
    uploads: UploadPipeline = field(default_factory=UploadPipeline)  # attack → transforms → wire, per client
    aggregator: Optional[Aggregator] = None  # None: the algorithm's own rule (the weighted mean)
    architectures: Optional[Architectures] = None  # None: every client has ``model``
    #: the local-training seam (fedloom.engines.local_training): e.g. InfoBatch's schedule; None: plain epochs
    local_training: Optional[Any] = None
    #: ``--compile``: plain local SGD steps compiled with torch.compile (engines/compiled_step.py)
    compile: bool = False

    def arch_of(self, client_id: int) -> int:
        return 0 if self.architectures is None else self.architectures.arch_of[client_id]

    def for_arch(self, arch: int) -> "Runtime":
        """This runtime seen by the clients of one architecture (its model and initial parameters)."""
        if self.architectures is None:
            return self
        return replace(self, model=self.architectures.models[arch], init_params=self.architectures.init_params[arch])

    def for_client(self, client_id: int) -> "Runtime":
        return self.for_arch(self.arch_of(client_id))

    def keep_all(self, algorithm: Any) -> bool:
        """Whether the server step needs every upload (the algorithm's rule or a robust aggregator), so that
        engines keep individual uploads instead of a running sum."""
        return algorithm.aggregation == "all" or bool(self.aggregator is not None and self.aggregator.needs_all)

    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        if isinstance(params, Predictor):  # an eval_params that predicts with more than the model
            if part != "all":
                raise ValueError("a Predictor only gives whole-model outputs (part='all')")
            return params(self.apply, x)
        return self.at_precision(self._forward)(params, x, part)

    def _forward(self, params: Params, x: torch.Tensor, part: str) -> torch.Tensor:
        return apply_with(self.model, params, (x,), {"part": part})

    def at_precision(self, forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """``forward`` run at the run's forward precision: itself for float32; for bfloat16, under autocast
        with float32 outputs (losses and updates stay float32)."""
        if self.precision == "float32":
            return forward
        device = self.device.type

        def autocast_forward(*args: Any) -> torch.Tensor:
            with torch.autocast(device, dtype=torch.bfloat16):
                return forward(*args).float()

        return autocast_forward

    def batch_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.mean_loss(self.apply(params, x), y)

    def per_sample_loss(self, params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.task.per_sample_loss(self.apply(params, x), y)

    def client_context(self, client_id: int, round_: int) -> "ClientContext":
        return ClientContext(self.for_client(client_id), client_id, round_)


class ClientContext:
    """Everything an algorithm may touch while running client ``client_id`` in round ``round``."""

    def __init__(self, runtime: Runtime, client_id: int, round_: int) -> None:
        self.runtime = runtime
        self.client_id = client_id
        self.round = round_
        #: the local-training seam's state for this client (the engine loads and saves it around client_update)
        self.training_state: Optional[Any] = None
        self.training_metrics: dict[str, float] = {}

    @property
    def sgd(self) -> SGDConfig:
        return self.runtime.sgd.at_round(self.round)

    @property
    def train_indices(self) -> torch.Tensor:
        return self.runtime.data.train_idx[self.client_id]

    @property
    def test_indices(self) -> torch.Tensor:
        return self.runtime.data.test_idx[self.client_id]

    @property
    def num_train_samples(self) -> int:
        return int(self.train_indices.shape[0])

    @property
    def init_params(self) -> Params:
        """The initial parameters of this client's model (for a state initialised outside init_client_state)."""
        return self.runtime.init_params

    @property
    def total_rounds(self) -> int:
        """The number of rounds of this run (``ctx.round == ctx.total_rounds`` in the last one)."""
        if self.runtime.total_rounds is None:
            raise RuntimeError("this runtime was built without total_rounds")
        return self.runtime.total_rounds

    def train_label_counts(self) -> torch.Tensor:
        """How many training samples of each class this client holds (float, one entry per class)."""
        labels = self.runtime.data.dataset.y[self.train_indices]
        return torch.bincount(labels, minlength=self.runtime.data.num_classes).to(torch.float32)

    @torch.no_grad()
    def mean_loss(self, params: Params, indices: torch.Tensor) -> torch.Tensor:
        """Mean task loss of ``params`` over some of this client's samples (a validation slice), as a tensor."""
        x, y = self.data(indices)
        return self.runtime.task.mean_loss(self.apply(params, x), y)

    def generator(self, purpose: str, round_: Optional[int] = None) -> torch.Generator:
        """A generator unique to (root seed, round, client, purpose). ``round_`` names another round's stream:
        a step that follows server step r (FedALA's ALA, FedAPEN's λ) is run once by eval_params in round r and
        again by client_update in round r + 1, and must draw the same numbers both times."""
        return torch_generator(self.runtime.seed, self.round if round_ is None else round_, self.client_id,
                               purpose)

    def data(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of some of this client's samples, for an algorithm's own small loop over data
        that is not local SGD on the model (FedALA's weight learning, FedAPEN's ensemble weight); a malicious
        client's data are poisoned here as in local SGD."""
        x, y = self.runtime.data.dataset.x[indices], self.runtime.data.dataset.y[indices]
        poison = self.poison()
        return (x, y) if poison is None else poison.corrupt_batch(indices, x, y)

    def poison(self) -> Any:
        """This client's data-level attack (a BatchPoison), None unless the threat model makes it malicious."""
        data = self.runtime.data
        return self.runtime.uploads.poison_for(self.client_id, data.train_idx[self.client_id], data.num_classes,
                                               data.input_shape)

    def local_sgd_carry(self, params: Params, carry: Any, batch_loss: CarryLoss,
                        **options: Any) -> tuple[Params, Any, dict[str, float]]:
        """``local_sgd`` whose batch loss threads a per-client running statistic from batch to batch (FedDBE's
        running feature mean): ``batch_loss(params, x, y, aux, carry) -> (per-sample losses, new carry)``. The
        carry is detached after every batch, so gradients only flow through the current batch; ``options`` are
        local_sgd's (with ``draws``, the loss's draws come after the carry). Returns (params, final carry,
        metrics)."""
        held = {"carry": carry}
        draws = options.pop("draws", None)
        if draws is not None:
            batch_loss = with_draws(batch_loss, draws, self.generator(draws.purpose))

        def threaded(w: Params, x: torch.Tensor, y: torch.Tensor, aux: Any) -> torch.Tensor:
            losses, new = batch_loss(w, x, y, aux, held["carry"])
            held["carry"] = tree_map(lambda t: t.detach(), new)  # the context owns the carry, not a hook
            return losses

        trained, metrics = self.local_sgd(params, batch_loss=threaded, **options)
        return trained, held["carry"], metrics

    @torch.no_grad()
    def class_sums(self, params: Params, fn: FeatureFn, classes: int,
                   batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ fn(params, x) per class [C, D] float32, samples per class [C]) over this client's training data
        in its order, ``batch_size`` samples at a time, without gradients (the prototype pass of FedProto and
        its family). ``params`` is an argument, not a closure, so that a pack can map ``fn`` over its clients."""
        sums: Optional[torch.Tensor] = None
        counts: Optional[torch.Tensor] = None
        for batch in self.train_indices.split(batch_size):
            x, y = self.data(batch)
            out = fn(params, x).float()
            if sums is None:
                sums = torch.zeros(classes, out.shape[1], device=out.device)
                counts = torch.zeros(classes, device=out.device)
            sums.index_add_(0, y, out)
            counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float32))
        if sums is None:
            raise ValueError(f"client {self.client_id} has no training data for a class-statistics pass")
        return sums, counts

    def each_client(self, fn: Callable[..., Any], *trees: Any) -> Any:
        """``fn`` on this client's trees, for what a pack can neither stack nor vmap (a value whose shape
        depends on the data, such as a wire message of the classes a client holds): ``fn(*trees)`` here; a
        pack calls it once per client and hands the engine the per-client results."""
        return fn(*trees)

    def apply(self, params: Params, x: torch.Tensor, part: str = "all") -> torch.Tensor:
        return self.runtime.apply(params, x, part)

    def per_client(self, fn: Callable[..., Any], *trees: Any) -> Any:
        """Apply ``fn`` to this client's trees. Use it for any reduction over parameters outside the local-SGD
        hooks (norms, distances, similarities): under the serial engine it is just ``fn(*trees)``; a vectorized
        engine, whose trees carry a leading client axis, maps ``fn`` over that axis instead of letting it
        reduce across clients."""
        return fn(*trees)

    def task_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-sample task loss of model outputs (for ``batch_loss`` hooks that add terms to it)."""
        return self.runtime.task.per_sample_loss(outputs, targets)

    def local_sgd(self, params: Params, *, epochs: Optional[int] = None, lr: Optional[float] = None,
                  purpose: str = "train", indices: Optional[torch.Tensor] = None,
                  extra_loss: Optional[ExtraLoss] = None, batch_loss: Optional[BatchLoss] = None,
                  grad_correction: Optional[GradCorrection] = None,
                  trainable: Optional[Callable[[str], bool]] = None,
                  aux: Any = None, batch_size: Optional[int] = None, steps_per_batch: int = 1,
                  after_batch: Optional[AfterBatch] = None, draws: Optional[StepDraws] = None,
                  coupled: bool = False) -> tuple[Params, dict[str, float]]:
        """Local SGD from ``params`` on this client's training data (or ``indices``); see LocalSGD for the
        hooks. Per-client tensors the hooks need go in ``aux`` (never in a closure). ``epochs``, ``lr`` and
        ``batch_size`` override the run's values for this call. ``draws``: the batch loss's per-step random
        draws (StepDraws), appended to its arguments. ``coupled``: the batch loss couples the samples of a batch
        (a batch-level term such as a contrastive loss), so a vectorized engine must not pad a partial batch;
        the serial loop never pads."""
        private = sample_privacy(self.runtime.uploads, self.runtime.seed, self.round, self.client_id)
        if private is not None and (draws is not None or coupled):  # (refused before training for algorithms
            # that declare couples_batch_samples; this guards any other)
            raise ConfigError("sample-level DP cannot clip a loss that couples a batch's samples or draws per step")
        if draws is not None:
            if batch_loss is None:
                raise ConfigError("per-step draws need a batch loss")
            batch_loss = with_draws(batch_loss, draws, self.generator(draws.purpose))
        cfg = self.sgd
        overrides = {"epochs": epochs, "lr": lr, "batch_size": batch_size}
        cfg = replace(cfg, **{key: value for key, value in overrides.items() if value is not None})
        runner = LocalSGD(self.runtime.batch_loss, self.runtime.data.dataset.x, self.runtime.data.dataset.y,
                          describe=f"client {self.client_id}, round {self.round}", poison=self.poison(),
                          private=private,
                          per_sample_loss=self.runtime.per_sample_loss,
                          compile_with=self._compile_with())
        plan = self._training_plan(purpose) if indices is None else None
        trained, metrics = runner.run(params, self.train_indices if indices is None else indices, cfg,
                                      self.generator(purpose), extra_loss=extra_loss, batch_loss=batch_loss,
                                      grad_correction=grad_correction, trainable=trainable, aux=aux,
                                      steps_per_batch=steps_per_batch, after_batch=after_batch, plan=plan)
        if plan is not None:
            self.training_state = plan.state()
            for key, value in plan.metrics().items():
                self.training_metrics[key] = self.training_metrics.get(key, 0.0) + value
        return trained, metrics

    def _compile_with(self) -> Optional[tuple[Any, Any]]:
        runtime = self.runtime
        if not runtime.compile or runtime.precision != "float32":
            return None
        return runtime.model, runtime.task

    def _training_plan(self, purpose: str) -> Optional[Any]:
        """The local-training seam's plan for one pass over this client's own training set (None: plain epochs)."""
        schedule = self.runtime.local_training
        if schedule is None:
            return None
        return schedule.plan(self.training_state, self.train_indices, self.generator(f"infobatch-{purpose}"))

    @torch.no_grad()
    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        """Additive task statistics (e.g. correct, loss_sum, count) of ``params`` on a split of this client."""
        indices = self.test_indices if split == "test" else self.train_indices
        x, y = self.runtime.data.dataset.x, self.runtime.data.dataset.y
        sums: dict[str, torch.Tensor] = {}
        for chunk in indices.split(self.runtime.eval_batch_size):
            batch_sums = self.runtime.task.eval_sums(self.apply(params, x[chunk]), y[chunk])
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0) + value.double()
        return {key: float(value) for key, value in sums.items()}
