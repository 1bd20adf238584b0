"""The one local-training loop every algorithm uses: minibatch SGD over a client's index array.

Functional: parameters go in as a dict and come out as a new dict; nothing is stored on a module. Hooks let
algorithms change the objective or the step without rewriting the loop:

* ``extra_loss(params, aux) -> scalar``: added to every batch loss (FedProx's μ/2‖w−θ‖², Ditto's λ term...).
* ``batch_loss(params, x, y, aux) -> per-sample losses [B]``: replaces the task loss (methods that need
  features); the loop averages it over the batch (a vectorized engine weights it, to mask padding).
* ``grad_correction(params, grads, aux) -> grads``: edits the gradient before the step (SCAFFOLD's c − c_i...);
  it returns tensors without autograd history (detach anything taken from ``params``).
* ``trainable(name) -> bool``: which parameters are trained; the others are held fixed (FedRep's phases).
* ``steps_per_batch``: how many steps are taken on each batch (pFedMe's K inner steps); default 1.
* ``after_batch(params, aux) -> dict``: after the step(s) on each batch, replaces the returned entries
  (a projection such as APFL's α ∈ [0, 1], or a closed-form update such as pFedMe's local model w).

A batch loss that draws random numbers at every step (VHL's virtual batch, FedImpro's synthetic features) does
not draw them itself: it names them with ``StepDraws`` and receives them as its last argument. The draws come
from the client's own (seed, round, client, purpose) stream, one call per step right before the loss, so a
vectorized engine, whose losses run under vmap where nothing may draw, makes the same draws per client.

Hooks may close over tensors shared by every client (the broadcast). Anything specific to one client (its
state, its control variate, a personal anchor) must come in through ``aux``, a tree the caller passes to
``local_sgd``: a vectorized engine slices ``aux`` per client, while a closure would see the whole pack.

Batches follow PyTorch's DataLoader(shuffle=True, drop_last=False): every epoch a fresh permutation drawn from
the client's generator, the last batch possibly smaller; its loss is the mean over its own samples.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

import torch

from fedloom.algorithms.draws import StepDraws
from fedloom.algorithms.tree import Params
from fedloom.errors import DivergenceError

ExtraLoss = Callable[[Params, Any], torch.Tensor]
BatchLoss = Callable[[Params, torch.Tensor, torch.Tensor, Any], torch.Tensor]
GradCorrection = Callable[[Params, Params, Any], Params]
AfterBatch = Callable[[Params, Any], Params]
TaskLoss = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]


def with_draws(batch_loss: Callable[..., Any], draws: StepDraws, generator: torch.Generator) -> Callable[..., Any]:
    """``batch_loss`` with one draw per call (per step) appended to its arguments: the serial loop's form."""
    def loss(w: Params, x: torch.Tensor, y: torch.Tensor, *rest: Any) -> Any:
        return batch_loss(w, x, y, *rest, draws.draw(generator, x.shape[0]))

    return loss


@dataclass(frozen=True)
class SGDConfig:
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    #: leave out each epoch's last batch when it is smaller than batch_size (PyTorch's DataLoader drop_last,
    #: which PFLlib trains with): a client with fewer samples than one batch then makes no step
    drop_last: bool = False
    #: per-round decay of ``lr``: round r (1, 2, ...; 0 is the initial evaluation) trains with lr * lr_decay**r
    lr_decay: float = 1.0

    def at_round(self, round_: int) -> "SGDConfig":
        """These settings as round ``round_`` trains with them (the decayed learning rate)."""
        return self if self.lr_decay == 1.0 else replace(self, lr=self.lr * self.lr_decay ** round_)


def epoch_batches(indices: torch.Tensor, batch_size: int, generator: torch.Generator,
                  drop_last: bool = False) -> list[torch.Tensor]:
    """One epoch of shuffled minibatches of sample indices (the permutation is drawn either way, so a run with
    ``drop_last`` sees the same batches but the last partial one)."""
    order = torch.randperm(indices.shape[0], generator=generator)
    batches = list(indices[order].split(batch_size))
    if drop_last and batches and batches[-1].shape[0] < batch_size:
        batches.pop()
    return batches


@dataclass
class LocalSGD:
    """Runs SGD for one client. ``loss_fn(params, x, y)`` is the mean task loss of a batch under the model."""

    loss_fn: TaskLoss
    x: torch.Tensor
    y: torch.Tensor
    describe: str  # "client 3, round 7" for error messages
    #: a malicious client's data-level attack (fedloom.pipeline.attacks.BatchPoison): changes its batches
    poison: Optional[Any] = None
    #: sample-level DP-SGD (fedloom.pipeline.privacy.sample.PerSampleClipper): per-sample clipped, noised gradients
    private: Optional[Any] = None
    #: ``(params, x, y) -> per-sample losses``: needed when a local-training plan weights samples (InfoBatch)
    per_sample_loss: Optional[TaskLoss] = None
    #: ``--compile``: (model template, task) for the compiled plain step (engines/compiled_step.py)
    compile_with: Optional[tuple[Any, Any]] = None

    def run(self, params: Params, indices: torch.Tensor, cfg: SGDConfig, generator: torch.Generator, *,
            extra_loss: Optional[ExtraLoss] = None, batch_loss: Optional[BatchLoss] = None,
            grad_correction: Optional[GradCorrection] = None, trainable: Optional[Callable[[str], bool]] = None,
            aux: Any = None, steps_per_batch: int = 1,
            after_batch: Optional[AfterBatch] = None, plan: Optional[Any] = None) -> tuple[Params, dict[str, float]]:
        """``plan`` (the local-training seam's EpochPlan, e.g. InfoBatch) chooses each epoch's samples and their
        loss weights and receives their per-sample losses; None: every sample every epoch, weight 1."""
        plain = (extra_loss is None and batch_loss is None and grad_correction is None and trainable is None
                 and after_batch is None and plan is None and steps_per_batch == 1)
        fast = self._compiled(cfg) if plain else None
        if fast is not None:
            return self._run_compiled(fast, params, indices, cfg, generator)
        work = {name: p.detach().clone() for name, p in params.items()}
        names = [name for name in work if trainable is None or trainable(name)]
        for name in names:
            work[name].requires_grad_(True)
        tensors = [work[name] for name in names]
        # the same storage without autograd tracking: the step updates these in place, with no no_grad context
        # to enter on every step (a few percent of an M1 client's update)
        storage = [t.detach() for t in tensors]
        velocity = [torch.zeros_like(t) for t in tensors] if cfg.momentum else None
        if batch_loss is None:
            loss_fn = self.loss_fn
        else:
            loss_fn = lambda w, xb, yb: batch_loss(w, xb, yb, aux).mean()  # noqa: E731
        total, steps, samples = torch.zeros(()), 0, 0
        if plan is not None:
            loss_fn = self._planned_loss(plan, batch_loss, aux)
        for epoch in range(cfg.epochs):
            for batch in self._epoch(indices, cfg, generator, plan):
                batch, info = batch if plan is not None else (batch, None)
                xb, yb = self.x[batch], self.y[batch]
                if self.poison is not None:
                    xb, yb = self.poison.corrupt_batch(batch, xb, yb)
                for _ in range(steps_per_batch):
                    loss = loss_fn(work, xb, yb) if info is None else loss_fn(work, xb, yb, info)
                    if extra_loss is not None:
                        loss = loss + extra_loss(work, aux)
                    grads = torch.autograd.grad(loss, tensors) if self.private is None else self._private_grads(
                        loss_fn, work, names, xb, yb, cfg, extra_loss, aux, tensors)
                    if grad_correction is not None:
                        corrected = grad_correction(work, dict(zip(names, grads)), aux)
                        grads = tuple(corrected[name] for name in names)
                    self._step(storage, grads, cfg, velocity)
                    steps += 1
                if after_batch is not None:
                    self._replace(work, after_batch(work, aux))
                total += loss.detach() * xb.shape[0]  # the last step's loss on this batch
                samples += xb.shape[0]
            self._check_finite(total, epoch, cfg)
        return self._result(work, total, steps, samples)

    def _check_finite(self, total: torch.Tensor, epoch: int, cfg: SGDConfig) -> None:
        if not torch.isfinite(total):
            raise DivergenceError(f"non-finite training loss for {self.describe} (epoch {epoch + 1}); "
                                f"the run diverged: lower --lr (now {cfg.lr}) or check the data")

    @staticmethod
    def _result(work: Params, total: torch.Tensor, steps: int, samples: int) -> tuple[Params, dict[str, float]]:
        out = {name: t.detach() for name, t in work.items()}
        return out, {"train_loss": float(total) / max(samples, 1), "steps": float(steps),
                     "samples": float(samples)}

    def _compiled(self, cfg: SGDConfig) -> Optional[Callable]:
        if self.compile_with is None or self.poison is not None or self.private is not None:
            return None
        from fedloom.engines.compiled_step import compiled_step

        model, task = self.compile_with
        return compiled_step(model, task, cfg.momentum, cfg.weight_decay)

    def _run_compiled(self, step: Callable, params: Params, indices: torch.Tensor, cfg: SGDConfig,
                      generator: torch.Generator) -> tuple[Params, dict[str, float]]:
        """The loop of ``run`` for plain SGD, each step one call of the compiled step (same batches, same
        metrics; the arithmetic equal to the eager loop's to float rounding)."""
        work = {name: p.detach().clone() for name, p in params.items()}
        velocity = {name: torch.zeros_like(t) for name, t in work.items()} if cfg.momentum else None
        lr = torch.tensor(cfg.lr, dtype=torch.float32, device=next(iter(work.values())).device)
        total, steps, samples = torch.zeros(()), 0, 0
        for epoch in range(cfg.epochs):
            for batch in epoch_batches(indices, cfg.batch_size, generator, cfg.drop_last):
                xb, yb = self.x[batch], self.y[batch]
                work, velocity, loss = step(work, velocity, xb, yb, lr)
                steps += 1
                total += loss.detach() * xb.shape[0]
                samples += xb.shape[0]
            self._check_finite(total, epoch, cfg)
        return self._result(work, total, steps, samples)

    @staticmethod
    def _epoch(indices: torch.Tensor, cfg: SGDConfig, generator: torch.Generator, plan: Optional[Any]) -> list:
        if plan is None:
            return epoch_batches(indices, cfg.batch_size, generator, cfg.drop_last)
        return [(ids, (positions, weights)) for ids, positions, weights in plan.epoch_batches(cfg.batch_size,
                                                                                            generator)]

    def _planned_loss(self, plan: Any, batch_loss: Optional[BatchLoss], aux: Any) -> Callable:
        """The batch loss under a plan: mean of weight × per-sample loss; the unweighted losses become scores."""
        def loss_fn(w: Params, xb: torch.Tensor, yb: torch.Tensor, info: tuple) -> torch.Tensor:
            positions, weights = info
            losses = batch_loss(w, xb, yb, aux) if batch_loss is not None else self.per_sample_loss(w, xb, yb)
            plan.record(positions, losses)
            return (losses * weights.to(losses.device)).mean()

        return loss_fn

    def _private_grads(self, loss_fn: TaskLoss, work: Params, names: list[str], xb: torch.Tensor, yb: torch.Tensor,
                       cfg: SGDConfig, extra_loss: Optional[ExtraLoss], aux: Any,
                       tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """DP-SGD's gradient of the data term; an ``extra_loss`` term involves no sample, so its exact gradient is
        added unclipped and unnoised."""
        grads = self.private.gradients(loss_fn, work, names, xb, yb, cfg.batch_size)
        if extra_loss is None:
            return grads
        extra = torch.autograd.grad(extra_loss(work, aux), tensors, allow_unused=True)
        return tuple(g if e is None else g + e for g, e in zip(grads, extra))

    @staticmethod
    @torch.no_grad()
    def _replace(work: Params, updates: Params) -> None:
        # in place, so trained tensors keep their identity (the step list and momentum refer to them)
        for name, value in updates.items():
            work[name].copy_(value.detach())

    @staticmethod
    def _step(tensors: list[torch.Tensor], grads: tuple[torch.Tensor, ...], cfg: SGDConfig,
              velocity: Optional[list[torch.Tensor]]) -> None:
        """One SGD step on ``tensors`` (detached aliases of the trained parameters; ``grads`` carry no graph)."""
        if cfg.weight_decay:
            grads = tuple(g + cfg.weight_decay * t for g, t in zip(grads, tensors))
        if velocity is not None:
            torch._foreach_mul_(velocity, cfg.momentum)
            torch._foreach_add_(velocity, grads)
            grads = tuple(velocity)
        torch._foreach_add_(tensors, grads, alpha=-cfg.lr)
