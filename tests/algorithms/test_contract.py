"""Both engine contexts implement the whole client-context protocol; what a pack cannot batch is refused with
NotVectorizable (which sends the algorithm to the serial path), never an AttributeError."""

from __future__ import annotations

import inspect

import pytest
import torch

from fedloom.algorithms.contract import LOCAL_SGD_OPTIONS, MEMBERS, ClientContextProtocol
from fedloom.engines.context import ClientContext
from fedloom.engines.pack_context import NotVectorizable, PackContext

from helpers import make_experiment


def test_every_protocol_member_exists() -> None:
    runtime = make_experiment(clients=4).runtime
    for ctx in (ClientContext(runtime, 0, 1), PackContext(runtime, [0, 1], 1, slots=2)):
        present = set(dir(type(ctx))) | set(vars(ctx))  # without touching properties a pack refuses
        missing = [name for name in MEMBERS if name not in present]
        assert not missing, f"{type(ctx).__name__} lacks {missing}"
    declared = {name for name in vars(ClientContextProtocol) if not name.startswith("_")}
    assert declared <= set(MEMBERS), declared - set(MEMBERS)


@pytest.mark.parametrize("cls", [ClientContext, PackContext])
def test_local_sgd_takes_every_option(cls: type) -> None:
    params = inspect.signature(cls.local_sgd).parameters
    assert set(LOCAL_SGD_OPTIONS) <= set(params), set(LOCAL_SGD_OPTIONS) - set(params)


def test_pack_members_work_or_say_not_vectorizable() -> None:
    exp = make_experiment(clients=4)
    runtime = exp.runtime
    ctx = PackContext(runtime, [0, 1], 1, slots=2)
    serial = ClientContext(runtime, 0, 1)
    params = runtime.init_params
    refused = {"client_id": lambda: ctx.client_id, "train_indices": lambda: ctx.train_indices,
               "test_indices": lambda: ctx.test_indices, "generator": lambda: ctx.generator("x"),
               "data": lambda: ctx.data(torch.arange(2)), "mean_loss": lambda: ctx.mean_loss(params, torch.arange(2)),
               "local_sgd_carry(no carry)": lambda: ctx.local_sgd_carry(params, None, lambda *a: None),
               "evaluate": lambda: ctx.evaluate(params),
               "local_sgd(after_batch)": lambda: ctx.local_sgd(params, after_batch=lambda *a: None)}
    for name, call in refused.items():
        with pytest.raises(NotVectorizable):
            call()
    assert ctx.num_train_samples.shape == (2,) and ctx.train_label_counts().shape[0] == 2
    assert ctx.init_params is serial.init_params and ctx.total_rounds == serial.total_rounds
    trained, _ = ctx.local_sgd(params, epochs=1, batch_size=5)
    assert next(iter(trained.values())).shape[0] == 2
    sums, counts = ctx.class_sums(trained, runtime.apply, 10, batch_size=64)
    assert sums.shape == (2, 10, 10) and counts.shape == (2, 10)
    assert [ctx.each_client(lambda s: s.shape, sums)[i] for i in range(2)] == [(10, 10)] * 2


def test_init_client_state_is_told_the_client() -> None:
    """A client's first state is built for that client (its id), e.g. a per-client seed or a personal head."""
    from dataclasses import dataclass

    from fedloom.algorithms.local import Local
    from fedloom.engines.serial import SerialEngine

    @dataclass(frozen=True)
    class Tagged(Local):
        def init_client_state(self, init_params, client_id):  # type: ignore[no-untyped-def]
            return {"params": init_params, "who": torch.tensor(float(client_id))}

    exp = make_experiment(clients=4)
    engine = SerialEngine(exp.runtime)
    for cid in (0, 3):
        assert engine._load_state(Tagged(), cid)["who"].item() == cid
