"""The shared local-SGD loop against hand-computed steps."""

import pytest
import torch
import torch.nn.functional as F

from fedloom.engines.local_sgd import LocalSGD, SGDConfig, epoch_batches
from fedloom.errors import TrainingError


def linear_loss(params, x, y):
    return F.cross_entropy(x @ params["w"].T + params["b"], y)


def setup(n: int = 7):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)
    params = {"w": torch.randn(2, 3, generator=g), "b": torch.zeros(2)}
    return LocalSGD(linear_loss, x, y, describe="test"), params, x, y


def manual_sgd(params, x, y, batches, lr, extra=None):
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    for batch in batches:
        loss = linear_loss(w, x[batch], y[batch]) + (extra(w) if extra else 0)
        grads = torch.autograd.grad(loss, list(w.values()))
        with torch.no_grad():
            for t, g in zip(w.values(), grads):
                t -= lr * g
    return {k: v.detach() for k, v in w.items()}


def test_matches_manual_sgd_with_partial_last_batch() -> None:
    runner, params, x, y = setup(7)
    idx = torch.arange(7)
    cfg = SGDConfig(lr=0.3, batch_size=3, epochs=2)
    out, metrics = runner.run(params, idx, cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    batches = epoch_batches(idx, 3, g) + epoch_batches(idx, 3, g)
    assert [len(b) for b in batches] == [3, 3, 1, 3, 3, 1]
    expected = manual_sgd(params, x, y, batches, 0.3)
    for k in params:
        torch.testing.assert_close(out[k], expected[k])
    assert metrics["steps"] == 6 and metrics["samples"] == 14
    assert not params["w"].requires_grad  # inputs untouched


def test_extra_loss_and_trainable_subset() -> None:
    runner, params, x, y = setup()
    anchor = {k: v + 1 for k, v in params.items()}
    extra = lambda w, aux=None: 0.5 * sum(((w[k] - anchor[k]) ** 2).sum() for k in w)  # noqa: E731
    cfg = SGDConfig(lr=0.1, batch_size=7, epochs=1)
    out, _ = runner.run(params, torch.arange(7), cfg, torch.Generator().manual_seed(1), extra_loss=extra)
    expected = manual_sgd(params, x, y, [torch.randperm(7, generator=torch.Generator().manual_seed(1))], 0.1, extra)
    torch.testing.assert_close(out["w"], expected["w"])
    frozen, _ = runner.run(params, torch.arange(7), cfg, torch.Generator().manual_seed(1),
                           trainable=lambda name: name == "b")
    assert torch.equal(frozen["w"], params["w"]) and not torch.equal(frozen["b"], params["b"])


def test_grad_correction_is_applied() -> None:
    runner, params, _, _ = setup()
    cfg = SGDConfig(lr=1.0, batch_size=7, epochs=1)
    zero = lambda p, g, aux: {k: torch.zeros_like(v) for k, v in g.items()}  # noqa: E731
    out, _ = runner.run(params, torch.arange(7), cfg, torch.Generator().manual_seed(1), grad_correction=zero)
    assert all(torch.equal(out[k], params[k]) for k in params)


def test_momentum_matches_torch_sgd() -> None:
    runner, params, x, y = setup(8)
    cfg = SGDConfig(lr=0.1, batch_size=4, epochs=1, momentum=0.9, weight_decay=0.01)
    out, _ = runner.run(params, torch.arange(8), cfg, torch.Generator().manual_seed(2))
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.SGD(list(w.values()), lr=0.1, momentum=0.9, weight_decay=0.01)
    for batch in epoch_batches(torch.arange(8), 4, torch.Generator().manual_seed(2)):
        opt.zero_grad()
        linear_loss(w, x[batch], y[batch]).backward()
        opt.step()
    for k in params:
        torch.testing.assert_close(out[k], w[k].detach())


def test_nonfinite_loss_is_a_clear_error() -> None:
    runner, params, _, _ = setup()
    params = {k: v * float("nan") for k, v in params.items()}
    with pytest.raises(TrainingError, match="non-finite training loss for test"):
        runner.run(params, torch.arange(7), SGDConfig(lr=0.1, batch_size=7, epochs=1), torch.Generator())


def test_hooks_receive_aux_and_batch_loss_replaces_the_task_loss() -> None:
    runner, params, x, y = setup()
    seen = []

    def per_sample(w, xb, yb, aux):
        seen.append(aux)
        return F.cross_entropy(xb @ w["w"].T + w["b"], yb, reduction="none") * aux["scale"]

    cfg = SGDConfig(lr=0.1, batch_size=7, epochs=1)
    aux = {"scale": torch.tensor(2.0)}
    out, _ = runner.run(params, torch.arange(7), cfg, torch.Generator().manual_seed(1), batch_loss=per_sample, aux=aux)
    assert seen and seen[0] is aux
    # doubling the loss doubles the step: same as lr 0.2 on the plain task loss
    ref, _ = runner.run(params, torch.arange(7), SGDConfig(lr=0.2, batch_size=7, epochs=1),
                        torch.Generator().manual_seed(1))
    torch.testing.assert_close(out["w"], ref["w"])


def test_drop_last_leaves_out_only_the_partial_batch_of_the_same_permutation() -> None:
    idx = torch.arange(10, 33)  # 23 samples, batch 5: 4 full batches and 3 left over
    kept = epoch_batches(idx, 5, torch.Generator().manual_seed(4), drop_last=True)
    every = epoch_batches(idx, 5, torch.Generator().manual_seed(4))
    assert len(every) == 5 and every[-1].numel() == 3
    assert len(kept) == 4 and all(torch.equal(a, b) for a, b in zip(kept, every[:4]))
    assert epoch_batches(torch.arange(4), 5, torch.Generator().manual_seed(4), drop_last=True) == []
    assert len(epoch_batches(torch.arange(10), 5, torch.Generator().manual_seed(4), drop_last=True)) == 2


def test_drop_last_in_a_run_trains_on_whole_batches_on_every_engine() -> None:
    """PyTorch's DataLoader(drop_last=True), as PFLlib trains: each client sees floor(n/B)·B samples per epoch
    (a client smaller than one batch makes no step and keeps the broadcast), the same on serial and packs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "engines"))
    from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records
    from fedloom.engines import EngineOptions

    settings = dict(algorithm="fedavg", clients=6, rounds=2, batch_size=32, drop_last=True)
    serial = on_engine("serial", **settings)
    sizes = [int(i.numel()) for i in serial.data.train_idx]
    ctx = serial.runtime.client_context(0, 1)
    _, metrics = ctx.local_sgd(dict(serial.runtime.init_params))
    assert metrics["samples"] == sizes[0] // 32 * 32 < sizes[0]
    records, params = run_records(serial, 2)
    packed = on_engine("vectorized", EngineOptions(min_clients=1), **settings)
    other, other_params = run_records(packed, 2)
    assert packed.engine.serial_reason is None
    assert_records_close(records, other, tol=1e-5)
    assert max_param_diff(params, other_params) < 1e-5
    plain, _ = run_records(on_engine("serial", **{**settings, "drop_last": False}), 2)
    assert plain[-1]["accuracy"] != records[-1]["accuracy"]  # the switch changes what is trained


def test_drop_last_is_out_of_the_identity_at_its_default_and_refused_with_infobatch() -> None:
    from fedloom.checkpoint import config_identity
    from fedloom.config import RunConfig
    from fedloom.errors import ConfigError
    from helpers import make_experiment

    assert "drop_last" not in config_identity(RunConfig())  # run folders made before the switch keep their names
    assert config_identity(RunConfig(drop_last=True))["drop_last"] is True
    with pytest.raises(ConfigError, match="--drop-last cannot be combined"):
        make_experiment(drop_last=True, options={"infobatch": {"prune_ratio": 0.5}})


def test_lr_decay_trains_round_r_with_lr_times_decay_to_the_r() -> None:
    """--lr-decay d: round r runs local SGD with lr·d^r, on every path that reads ctx.sgd (the Snowball repo's
    per-round decay, rounds counted from 1 as in metrics.jsonl)."""
    from helpers import make_experiment

    decayed = make_experiment(clients=4, lr=0.1, lr_decay=0.5)
    plain = make_experiment(clients=4, lr=0.1 * 0.5 ** 3)
    assert decayed.runtime.client_context(1, 0).sgd.lr == 0.1
    start = dict(decayed.runtime.init_params)
    out, _ = decayed.runtime.client_context(1, 3).local_sgd(start)
    ref, _ = plain.runtime.client_context(1, 3).local_sgd(start)
    for name in ref:
        torch.testing.assert_close(out[name], ref[name])
    undecayed, _ = make_experiment(clients=4, lr=0.1).runtime.client_context(1, 3).local_sgd(start)
    assert any(not torch.equal(out[n], undecayed[n]) for n in out)


def test_lr_decay_is_the_same_on_the_vectorized_and_processes_engines_and_out_of_the_identity_at_default() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent.parent / "engines"))
    from engine_helpers import assert_records_close, max_param_diff, on_engine, run_records
    from fedloom.checkpoint import config_identity
    from fedloom.config import RunConfig
    from fedloom.engines import EngineOptions

    settings = dict(algorithm="fedavg", clients=6, rounds=3, lr=0.2, lr_decay=0.3)
    records, params = run_records(on_engine("serial", **settings), 3)
    packed = on_engine("vectorized", EngineOptions(min_clients=1), **settings)
    other, other_params = run_records(packed, 3)
    assert packed.engine.serial_reason is None
    assert_records_close(records, other, tol=1e-5)
    assert max_param_diff(params, other_params) < 1e-5
    from helpers import make_experiment

    options = EngineOptions(workers=2, run_config=make_experiment(**settings).config, worker_timeout=300.0)
    worked, worked_params = run_records(on_engine("processes", options, **settings), 3)  # rounds known in workers
    assert_records_close(records, worked, tol=1e-5)
    assert max_param_diff(params, worked_params) < 1e-5
    scaled, _ = run_records(on_engine("serial", **{**settings, "lr": 0.2 * 0.3, "lr_decay": 1.0}), 1)
    assert scaled[1]["local_train_loss"] == records[1]["local_train_loss"]  # round 1 trains with lr·d
    plain, _ = run_records(on_engine("serial", **{**settings, "lr_decay": 1.0}), 3)
    assert plain[1]["local_train_loss"] != records[1]["local_train_loss"]
    assert "lr_decay" not in config_identity(RunConfig())  # run folders made before the option keep their names
    assert config_identity(RunConfig(lr_decay=0.99))["lr_decay"] == 0.99
