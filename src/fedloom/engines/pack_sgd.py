"""Local SGD for a pack of clients in lockstep, with slot refill.

S slots train S clients at once: each step gathers one minibatch per slot into a [S, B, ...] tensor and
computes every slot's gradient with ``torch.func.vmap(torch.func.grad(...))`` over parameters stacked along a
leading slot axis. Clients are taken longest first; when a client has run all its batches its slot is
refilled with the next client at once, so slots stay busy (no masking every client to the longest one).

Exactness: each client sees exactly the batches the serial engine would give it (same (seed, round, client,
purpose) stream, same DataLoader-like order). A partial batch is padded to B with per-sample weight 0 and its
real samples weighted 1/len(batch), so its loss is the mean over its own samples, as under serial. Slots with
no client left are masked out of the update. A loss that couples a batch's samples (``exact_partial``: a
contrastive term, a batch statistic, per-step draws sized by the batch) would see the padding, so a slot's
partial batch is then stepped again on its real samples alone, outside vmap, and that step replaces the padded
one. Per-step draws (StepDraws) are made per slot from the client's own stream, in the serial loop's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch.func import grad, vmap

from fedloom.algorithms.tree import Params, tree_leaves, tree_map
from fedloom.engines.local_sgd import BatchLoss, ExtraLoss, GradCorrection, SGDConfig, StepDraws, epoch_batches
from fedloom.errors import DivergenceError

PerSampleLoss = Callable[[Params, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PackJob:
    """One client's work: its batches (index tensors) for all epochs, and its position in the pack."""

    position: int
    client_id: int
    batches: list[torch.Tensor]
    #: a malicious client's data-level attack (fedloom.pipeline.attacks.BatchPoison), applied to its batches
    poison: Optional[Any] = None
    #: the local-training seam's EpochPlan (InfoBatch): epochs are drawn one at a time, as the serial loop draws
    #: them, since each depends on the scores the previous one left; ``batches`` then holds the epochs so far
    plan: Optional[Any] = None
    generator: Optional[torch.Generator] = None  # the batch-order stream, for the plan's later epochs
    epochs_left: int = 0
    planned_steps: int = 0
    positions: list[torch.Tensor] = field(default_factory=list)  # per batch: positions in the client's data
    weights: list[torch.Tensor] = field(default_factory=list)  # per batch: the plan's per-sample loss weights
    #: the client's stream for the loss's per-step draws (PackHooks.draws), as the serial loop's
    draw_generator: Optional[torch.Generator] = None

    def next_epoch(self, batch_size: int) -> None:
        """Append the plan's next epoch (sample ids, positions, weights) to this job's batches."""
        for ids, positions, weights in self.plan.epoch_batches(batch_size, self.generator):
            self.batches.append(ids)
            self.positions.append(positions)
            self.weights.append(weights)
        self.epochs_left -= 1


def planned_job(position: int, client_id: int, plan: Any, cfg: SGDConfig, generator: torch.Generator,
                poison: Optional[Any] = None) -> PackJob:
    """A job whose epochs a local-training plan draws one at a time (the first one now)."""
    n = int(plan.indices.shape[0])
    job = PackJob(position, client_id, [], poison, plan, generator, cfg.epochs,
                  cfg.epochs * -(-n // cfg.batch_size))
    job.next_epoch(cfg.batch_size)
    return job


def client_batches(indices: torch.Tensor, cfg: SGDConfig, generator: torch.Generator) -> list[torch.Tensor]:
    """All epochs' batches, drawn exactly as LocalSGD.run draws them."""
    return [b for _ in range(cfg.epochs) for b in epoch_batches(indices, cfg.batch_size, generator, cfg.drop_last)]


@dataclass
class SlotUsage:
    """How busy the slots were: utilization = active slot-steps / slot-steps (1.0 = no idle slot)."""

    slot_steps: int = 0
    active_slot_steps: int = 0

    def record(self, width: int, active: int) -> None:
        self.slot_steps += width
        self.active_slot_steps += active

    @property
    def utilization(self) -> float:
        return self.active_slot_steps / self.slot_steps if self.slot_steps else 1.0


@dataclass
class PackHooks:
    extra_loss: Optional[ExtraLoss] = None
    batch_loss: Optional[BatchLoss] = None
    grad_correction: Optional[GradCorrection] = None
    trainable: Optional[Callable[[str], bool]] = None
    #: ``(params, x, y, aux, carry) -> (per-sample losses, new carry)`` (local_sgd_carry): replaces batch_loss
    carry_loss: Optional[Callable[..., tuple[torch.Tensor, Any]]] = None
    #: the loss's per-step draws, appended to its arguments (each job's ``draw_generator``)
    draws: Optional[StepDraws] = None
    #: the loss couples a batch's samples: a partial batch is stepped on its real samples alone (no padding)
    exact_partial: bool = False


class PackSGD:
    """Trains ``jobs`` with ``slots`` lockstep slots. Parameters come as (name -> tensor) where a tensor is
    either shared (the model's shape) or stacked per pack position ([n, *shape]); see ``run``."""

    def __init__(self, per_sample_loss: PerSampleLoss, x: torch.Tensor, y: torch.Tensor, slots: int,
                 usage: Optional["SlotUsage"] = None, batched: Optional["BatchedModel"] = None) -> None:
        self.per_sample_loss, self.x, self.y, self.slots = per_sample_loss, x, y, slots
        self.usage = usage if usage is not None else SlotUsage()
        self.batched = batched

    def run(self, params: Params, stacked: set[str], jobs: list[PackJob], n: int, cfg: SGDConfig,
            hooks: PackHooks, aux: Any = None, carry: Any = None) -> tuple[Params, dict[str, Any]]:
        """Train every job; ``carry`` ([n, ...] per client, with ``hooks.carry_loss``) is threaded through each
        client's batches and its final value returned as ``metrics["carry"]``."""
        names = [k for k in params if hooks.trainable is None or hooks.trainable(k)]
        # a client without a batch (fewer samples than one batch under drop_last) makes no step: its output
        # stays the start its slot would have loaded
        jobs = [job for job in jobs if job.plan is not None or job.batches]
        state = _SlotState(params, stacked, names, max(1, min(self.slots, len(jobs))), n, cfg, aux, carry)
        queue = sorted(jobs, key=lambda job: -(job.planned_steps or len(job.batches)))  # longest first
        planned = any(job.plan is not None for job in jobs)
        for slot in range(state.width):
            state.load(slot, queue.pop(0) if queue else None)
        if self.batched is not None and hooks.batch_loss is None and hooks.carry_loss is None:
            step_fn = self.batched.step_function(hooks, state, aux is not None)
        else:
            step_fn = self._step_function(hooks, aux is not None)
        exact = hooks.exact_partial or hooks.draws is not None
        exact_step = _slot_step(self.per_sample_loss, hooks) if exact else None  # one slot, unbatched
        template = None if hooks.draws is None else _draw_template(hooks.draws, cfg.batch_size)
        while state.any_active():
            idx, weights, counts = state.next_batches()
            self.usage.record(state.width, int((counts > 0).sum()))
            xb = self.x[idx.reshape(-1)].reshape(*idx.shape, *self.x.shape[1:])
            yb = self.y[idx.reshape(-1)].reshape(idx.shape)
            state.poison(idx, xb, yb)
            wb = weights.to(xb.device)
            own_draws = state.draw(hooks.draws, counts) if hooks.draws is not None else None
            args = (state.train, state.frozen, xb, yb, wb, state.aux_slots, state.carry_slots,
                    None if own_draws is None else _stacked_draws(own_draws, template))
            out = list(step_fn(*args))
            if exact_step is not None:  # partial batches stepped again without their padding
                out = self._exact_partial(out, exact_step, state, args, counts, own_draws)
            grads, losses, per_sample = out[:3]
            if hooks.carry_loss is not None:  # before the update: a padded partial batch's carry is taken again
                state.advance_carry(out[3], xb, yb, counts, hooks.carry_loss, exact)
            if planned:  # the local-training seam's scores (InfoBatch); nothing to do without a plan
                state.record_scores(per_sample)
            state.update(grads, losses.detach().double().cpu() * counts)
            for slot in state.finished_slots():
                state.store(slot)
                state.load(slot, queue.pop(0) if queue else None)
        metrics = state.metrics()
        if hooks.carry_loss is not None:
            metrics["carry"] = state.carry_out
        return state.outputs(), metrics

    def _step_function(self, hooks: PackHooks, has_aux: bool) -> Callable:
        in_dims = (0, 0, 0, 0, 0, 0 if has_aux else None, 0 if hooks.carry_loss is not None else None,
                   0 if hooks.draws is not None else None)
        return vmap(_slot_step(self.per_sample_loss, hooks), in_dims=in_dims, randomness="error")

    @staticmethod
    def _exact_partial(out: list, step: Callable, state: "_SlotState", args: tuple, counts: torch.Tensor,
                       own_draws: Optional[list]) -> list:
        """``out`` with every partial batch's slot replaced by its step on the real samples alone."""
        size = args[2].shape[1]
        partial = [s for s, job in enumerate(state.jobs) if job is not None and 0 < counts[s] < size]
        if not partial:
            return out
        for slot in partial:
            real = int(counts[slot])
            pick = lambda tree: None if tree is None else tree_map(lambda t: t[slot], tree)  # noqa: E731
            own = (pick(args[0]), pick(args[1]), args[2][slot, :real], args[3][slot, :real], args[4][slot, :real],
                   pick(args[5]), pick(args[6]), None if own_draws is None else own_draws[slot])
            grads, loss, per_sample, *carried = step(*own)
            with torch.no_grad():
                for name, g in grads.items():
                    out[0][name][slot] = g
                out[1][slot] = loss
                out[2][slot] = 0.0
                out[2][slot, :real] = per_sample
                if carried:
                    tree_map(lambda dst, src: dst[slot].copy_(src), out[3], carried[0])
        return out


def _slot_step(per_sample_loss: Optional[PerSampleLoss], hooks: PackHooks) -> Callable:
    """One slot's (grads, loss, per-sample losses[, new carry]): vmapped over the slots, or called on one slot's
    real samples (PackSGD._exact_partial)."""
    def slot_loss(train: Params, frozen: Params, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor,
                  aux: Any, carry: Any, drawn: Any) -> tuple[torch.Tensor, tuple]:
        full = {**frozen, **train}
        extra = () if drawn is None else (drawn,)
        carried: tuple = ()
        if hooks.carry_loss is not None:
            losses, new = hooks.carry_loss(full, xb, yb, aux, carry, *extra)
            carried = (tree_map(lambda t: t.detach(), new),)
        elif hooks.batch_loss is not None:
            losses = hooks.batch_loss(full, xb, yb, aux, *extra)
        else:
            losses = per_sample_loss(full, xb, yb)
        loss = (losses * wb).sum()
        if hooks.extra_loss is not None:
            loss = loss + hooks.extra_loss(full, aux)
        return loss, (loss.detach(), losses.detach(), *carried)

    def slot_step(train: Params, frozen: Params, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor, aux: Any,
                  carry: Any, drawn: Any) -> tuple:
        grads, (loss, per_sample, *carried) = grad(slot_loss, has_aux=True)(train, frozen, xb, yb, wb, aux, carry,
                                                                              drawn)
        if hooks.grad_correction is not None:
            grads = hooks.grad_correction({**frozen, **train}, grads, aux)
        return (grads, loss, per_sample, *carried)

    return slot_step


def _draw_template(draws: StepDraws, batch_size: int) -> Any:
    """Zeros of a full batch's draw shapes, from a throwaway stream (no client's stream is touched)."""
    return tree_map(torch.zeros_like, draws.draw(torch.Generator().manual_seed(0), batch_size))


def _stacked_draws(own: list, template: Any) -> Any:
    """Every slot's draws stacked [S, ...]: a full batch's own; an idle slot's, or a partial batch's of other
    shapes, the template (that padded step is replaced by PackSGD._exact_partial or masked out)."""
    full = [tree if tree is not None and _same_shapes(tree, template) else template for tree in own]
    return tree_map(lambda *leaves: torch.stack(leaves), *full)


def _same_shapes(tree: Any, template: Any) -> bool:
    return all(a.shape == b.shape for a, b in zip(tree_leaves(tree), tree_leaves(template)))


@dataclass
class BatchedModel:
    """A model's hand-batched forward (models/batched.py) plus the task's per-sample loss of its outputs.

    Its step differentiates the sum of every slot's loss once with ordinary autograd: slots share no
    parameters, so the gradient with respect to the stacked tensors is each slot's own gradient. Hooks that
    act per client (extra loss, gradient correction) are still vmapped over the slots.
    """

    forward: Callable[[Params, torch.Tensor], torch.Tensor]
    task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def step_function(self, hooks: PackHooks, state: "_SlotState", has_aux: bool) -> Callable:
        for tensor in state.train.values():
            tensor.requires_grad_(True)  # updated in place under no_grad by _SlotState.update
        aux_dim = 0 if has_aux else None

        def step(train: Params, frozen: Params, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor,
                 aux: Any, carry: None = None, drawn: None = None) -> tuple[Params, torch.Tensor, torch.Tensor]:
            # (no carry and no draws: the batched path serves plain task losses only)
            full = {**frozen, **train}
            logits = self.forward(full, xb)
            losses = self.task_loss(logits.flatten(0, 1), yb.flatten()).view(wb.shape)
            per_slot = (losses * wb).sum(1)
            if hooks.extra_loss is not None:
                per_slot = per_slot + vmap(hooks.extra_loss, in_dims=(0, aux_dim))(full, aux)
            names = list(train)
            grads = dict(zip(names, torch.autograd.grad(per_slot.sum(), [train[k] for k in names])))
            if hooks.grad_correction is not None:
                grads = vmap(hooks.grad_correction, in_dims=(0, 0, aux_dim))(
                    {k: v.detach() for k, v in full.items()}, grads, aux)
            return grads, per_slot.detach(), losses.detach()

        return step


class _SlotState:
    """Per-slot parameters, velocities, schedules and per-client accumulators of one PackSGD.run."""

    def __init__(self, params: Params, stacked: set[str], names: list[str], width: int, n: int,
                 cfg: SGDConfig, aux: Any, carry: Any = None) -> None:
        self.params, self.stacked, self.cfg, self.width, self.n, self.aux = params, stacked, cfg, width, n, aux
        self.names = names
        self.train = {k: _slot_buffer(params[k], k in stacked, width) for k in names}
        self.frozen = {k: _slot_buffer(v, k in stacked, width) for k, v in params.items() if k not in names}
        self.velocity = {k: torch.zeros_like(v) for k, v in self.train.items()} if cfg.momentum else None
        self.out = {k: (v.clone() if k in stacked else v.expand(n, *v.shape).clone()) for k, v in params.items()}
        self.aux_slots = None if aux is None else tree_map(lambda a: a[:width].clone(), aux)
        #: local_sgd_carry's running statistic: one per slot while training, one per client when done
        self.carry_slots = None if carry is None else tree_map(lambda c: c[:width].clone(), carry)
        self.carry_out = None if carry is None else tree_map(torch.clone, carry)
        self.jobs: list[Optional[PackJob]] = [None] * width
        self.cursor = [0] * width
        self.loss_sum = torch.zeros(n, dtype=torch.float64)
        self.samples = torch.zeros(n, dtype=torch.float64)
        self.steps = torch.zeros(n, dtype=torch.float64)

    def load(self, slot: int, job: Optional[PackJob]) -> None:
        self.jobs[slot], self.cursor[slot] = job, 0
        if job is None:
            return
        with torch.no_grad():
            for k, buf in {**self.train, **self.frozen}.items():
                src = self.params[k]
                buf[slot].copy_(src[job.position] if k in self.stacked else src)
            if self.velocity is not None:
                for v in self.velocity.values():
                    v[slot].zero_()
            if self.aux_slots is not None:
                tree_map(lambda dst, src: dst[slot].copy_(src[job.position]), self.aux_slots, self.aux)
            if self.carry_slots is not None:
                tree_map(lambda dst, src: dst[slot].copy_(src[job.position]), self.carry_slots, self.carry_out)

    def poison(self, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Malicious slots' batches poisoned in place (padding too: it has weight 0 whatever it becomes)."""
        poison_rows([None if job is None else job.poison for job in self.jobs], idx, xb, yb)

    def any_active(self) -> bool:
        return any(job is not None for job in self.jobs)

    def next_batches(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Index [S, B], per-sample weights [S, B] and real sample counts [S] of every slot's next batch."""
        size = self.cfg.batch_size
        idx = torch.zeros(self.width, size, dtype=torch.long)
        weights = torch.zeros(self.width, size)
        counts = torch.zeros(self.width, dtype=torch.float64)
        for slot, job in enumerate(self.jobs):
            if job is None:
                continue
            batch = job.batches[self.cursor[slot]]
            idx[slot, : batch.shape[0]] = batch
            # a plan's per-sample weights (InfoBatch's 1/(1-r)) inside the batch mean
            scale = job.weights[self.cursor[slot]] if job.plan is not None else 1.0
            weights[slot, : batch.shape[0]] = scale / batch.shape[0]
            counts[slot] = batch.shape[0]
        return idx, weights, counts

    @torch.no_grad()
    def update(self, grads: Params, weighted_losses: torch.Tensor) -> None:
        active_list = [job is not None for job in self.jobs]
        active = torch.tensor(active_list)
        cfg = self.cfg
        for k, g in grads.items():
            p = self.train[k]
            if cfg.weight_decay:
                g = g + cfg.weight_decay * p
            if self.velocity is not None:
                self.velocity[k].mul_(cfg.momentum).add_(g)
                g = self.velocity[k]
            scale = (active.to(p.device, p.dtype) * cfg.lr).view(-1, *([1] * (p.dim() - 1)))
            p.sub_(scale * g)
        slots = [s for s, on in enumerate(active_list) if on]
        positions = torch.tensor([self.jobs[s].position for s in slots])
        sizes = torch.tensor([float(self.jobs[s].batches[self.cursor[s]].shape[0]) for s in slots],
                             dtype=torch.float64)
        self.loss_sum.index_add_(0, positions, weighted_losses[slots])
        self.samples.index_add_(0, positions, sizes)
        self.steps.index_add_(0, positions, torch.ones_like(sizes))
        for s in slots:
            self.cursor[s] += 1
            job = self.jobs[s]
            if job.plan is not None and self.cursor[s] == len(job.batches) and job.epochs_left > 0:
                job.next_epoch(self.cfg.batch_size)  # after this epoch's scores are in, as the serial loop does

    @torch.no_grad()
    def advance_carry(self, carried: Any, xb: torch.Tensor, yb: torch.Tensor, counts: torch.Tensor,
                      carry_loss: Callable[..., tuple[torch.Tensor, Any]], exact: bool = False) -> None:
        """Every slot's carry after its current batch: the vmapped step's, except that a partial batch's
        padding would enter the statistic, so such a slot's carry is taken again from its real samples alone
        (once per client and epoch; already so when ``exact``), and an idle slot keeps its own."""
        for slot, job in enumerate(self.jobs):
            if job is None:
                tree_map(lambda dst, src: dst[slot].copy_(src[slot]), carried, self.carry_slots)
            elif counts[slot] < xb.shape[1] and not exact:
                real = int(counts[slot])
                full = {name: buf[slot] for name, buf in {**self.frozen, **self.train}.items()}
                aux = None if self.aux_slots is None else tree_map(lambda a: a[slot], self.aux_slots)
                _, own = carry_loss(full, xb[slot, :real], yb[slot, :real], aux,
                                    tree_map(lambda c: c[slot], self.carry_slots))
                tree_map(lambda dst, src: dst[slot].copy_(src), carried, own)
        self.carry_slots = carried

    def draw(self, draws: StepDraws, counts: torch.Tensor) -> list[Any]:
        """Each active slot's draws for its current batch, from its client's stream (None for an idle slot)."""
        return [None if job is None else draws.draw(job.draw_generator, int(counts[slot]))
                for slot, job in enumerate(self.jobs)]

    def record_scores(self, per_sample: torch.Tensor) -> None:
        """Each planned slot's unweighted per-sample losses of its current batch become the samples' scores."""
        for slot, job in enumerate(self.jobs):
            if job is not None and job.plan is not None:
                positions = job.positions[self.cursor[slot]]
                job.plan.record(positions, per_sample[slot, : positions.shape[0]])

    def finished_slots(self) -> list[int]:
        return [s for s, job in enumerate(self.jobs) if job is not None and self.cursor[s] >= len(job.batches)]

    def store(self, slot: int) -> None:
        job = self.jobs[slot]
        if not torch.isfinite(self.loss_sum[job.position]):
            raise DivergenceError(f"non-finite training loss for client {job.client_id}; the run diverged: "
                                f"lower --lr (now {self.cfg.lr}) or check the data")
        with torch.no_grad():
            for k, buf in self.train.items():
                self.out[k][job.position].copy_(buf[slot])
            if self.carry_slots is not None:
                tree_map(lambda dst, src: dst[job.position].copy_(src[slot]), self.carry_out, self.carry_slots)

    def outputs(self) -> Params:
        return self.out

    def metrics(self) -> dict[str, torch.Tensor]:
        return {"train_loss": self.loss_sum / self.samples.clamp_min(1), "steps": self.steps,
                "samples": self.samples}


def poison_rows(poisons: list[Any], idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                sizes: Optional[list[int]] = None) -> None:
    """Row r of a stacked batch [R, B, ...] replaced in place by ``poisons[r]``'s version of it (a data-level
    attack's ``corrupt_batch``, the serial loop's, sample by sample); None rows stay clean. With ``sizes``, only
    each row's first sizes[r] samples (the rest is padding)."""
    for row, poison in enumerate(poisons):
        if poison is not None:
            n = idx.shape[1] if sizes is None else sizes[row]
            x[row, :n], y[row, :n] = poison.corrupt_batch(idx[row, :n], x[row, :n], y[row, :n])


def _slot_buffer(value: torch.Tensor, is_stacked: bool, width: int) -> torch.Tensor:
    shape = value.shape[1:] if is_stacked else value.shape
    return torch.empty(width, *shape, dtype=value.dtype, device=value.device)
