"""The local SGD step compiled with ``torch.compile`` (inductor), for ``--compile`` runs.

A federated client of a small model spends much of its update outside the arithmetic: the Python of autograd's
engine, per-op dispatch, one kernel launch per elementwise op. Compiling the whole functional step — forward,
``torch.func.grad``, weight decay, momentum and the update — into one graph fuses the elementwise work and drops
most of that Python (M1's MLP step, 1 thread: ~450 µs eager, ~300 µs compiled, benchmarks/w1_kernels.py and
docs/benchmarks.md). The compiled step is used only for plain local SGD: no hook of any kind (extra loss, batch
loss, gradient correction, trainable subset, after-batch, several steps per batch), no local-training plan, no
data-level attack, no per-sample privacy, float32 forward passes. Anything else runs the eager loop as always.

Numbers: fused kernels round differently, so a compiled run equals the eager run to float rounding, not bit for
bit (``--compile`` is part of the run's identity). Cost: the first call compiles (seconds; inductor's on-disk
cache makes later processes faster), and a batch of another size (an epoch's last, smaller batch) compiles once
more, with a dynamic batch dimension. The learning rate is an input of the step (a 0-d tensor), not a constant
of the graph, so ``--lr-decay`` changes it every round without compiling again. A compiler that fails (no C
compiler, an unsupported op) turns the option off for the process with one warning; the step then runs eagerly.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Optional

import torch
from torch.func import functional_call, grad_and_value

from fedloom.algorithms.tree import Params

Step = Callable[[Params, Optional[Params], torch.Tensor, torch.Tensor, torch.Tensor],
                tuple[Params, Optional[Params], torch.Tensor]]
_STEPS: dict[tuple, Step] = {}
_failed: list[str] = []  # one entry once compiling failed in this process


def compiled_step(model: torch.nn.Module, task: Any, momentum: float, weight_decay: float) -> Optional[Step]:
    """The compiled ``(params, velocity, x, y, lr) -> (params, velocity, loss)`` of plain SGD on ``model`` (one
    per model, task, momentum and weight decay in this process; ``lr`` a 0-d tensor), or None once compiling has
    failed here (eager loop)."""
    if _failed:
        return None
    key = (id(model), id(task), momentum, weight_decay)  # both live as long as the run's runtime
    if key not in _STEPS:
        step = _sgd_step(model, task.mean_loss, momentum, weight_decay)
        _STEPS[key] = _guarded(torch.compile(step), step)
    return _STEPS[key]


def _sgd_step(model: torch.nn.Module, mean_loss: Callable, momentum: float, weight_decay: float) -> Step:
    def loss_of(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return mean_loss(functional_call(model, params, (x,)), y)

    def step(params: Params, velocity: Optional[Params], x: torch.Tensor, y: torch.Tensor,
             lr: torch.Tensor) -> tuple[Params, Optional[Params], torch.Tensor]:
        grads, loss = grad_and_value(loss_of)(params, x, y)
        if weight_decay:
            grads = {n: g + weight_decay * params[n] for n, g in grads.items()}
        if velocity is not None:
            velocity = {n: momentum * velocity[n] + g for n, g in grads.items()}
            grads = velocity
        return {n: params[n] - lr * grads[n] for n in params}, velocity, loss

    return step


def _guarded(fast: Step, slow: Step) -> Step:
    """``fast``; once compiling has failed in this process, ``slow`` (the same step, eager) from then on, the
    failing call included, so a client whose last batch fails to compile still finishes its update."""
    def call(params: Params, velocity: Optional[Params], x: torch.Tensor, y: torch.Tensor,
             lr: torch.Tensor) -> Any:
        if not _failed:
            try:
                return fast(params, velocity, x, y, lr)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: run eagerly from now on
                _failed.append(f"{type(exc).__name__}: {exc}")
                warnings.warn(f"--compile: torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); "
                              "local SGD runs eagerly in this process", RuntimeWarning, stacklevel=2)
        return slow(params, velocity, x, y, lr)

    return call
