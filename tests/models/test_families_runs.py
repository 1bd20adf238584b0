"""--model-family in runs (HtFLlib's settings, Zhang et al., KDD 2025): client i trains and is scored with
member i mod len on every engine, each client's state holds its own architecture's tensors, the full-size
members take a training step, and bad input ends in one clear error before any run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedloom.algorithms.local import Local
from fedloom.cli import main
from fedloom.config import build_config
from fedloom.errors import ConfigError
from fedloom.models.families import build_family, check_homogeneous_heads
from fedloom.run import build_experiment, load_data, resolve_config

MLPS = ["run", "--algorithm", "local", "--model-family", "MLPs", "--dataset", "digits", "--clients", "8",
        "--rounds", "2", "--quiet", "--device", "cpu", "--mlps.feature-dim", "32"]


def one_error(capsys: pytest.CaptureFixture, argv: list[str], out: Path) -> str:
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert not out.exists()
    return err[0]


def test_each_client_gets_member_i_mod_len_with_its_own_state() -> None:
    cfg = resolve_config(build_config({"algorithm": "local", "model_family": "mlps", "clients": 6, "rounds": 1,
                                       "dataset": "digits", "out": "-", "device": "cpu",
                                       "options": {"mlps": {"feature_dim": 32}}}))
    exp = build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
    arch = exp.runtime.architectures
    assert cfg.model_family == "mlps" and cfg.options["mlps"] == {"feature_dim": 32}
    assert arch.arch_of == (0, 1, 2, 3, 0, 1) and len(arch.models) == 4
    states = [exp.engine._load_state(exp.algorithm, c)["params"] for c in range(6)]
    assert states[0]["body.encoder.1.weight"].shape == (100, 64)  # no hidden layer: 64 -> 100
    assert states[1]["body.encoder.1.weight"].shape == (500, 64)  # hidden [500]
    assert {k: v.shape for k, v in states[4].items()} == {k: v.shape for k, v in states[0].items()}
    for state in states:  # HtFLlib's convention: every head is Linear(D, C)
        assert state["head.weight"].shape == (10, 32)
    assert all(m.feature_dim == 32 for m in arch.models)


@pytest.mark.slow  # ~5 s of CPU per engine (CLI start-up and vmap set-up included)
@pytest.mark.parametrize("engine", ["vectorized", "processes"])
def test_a_family_run_is_engine_independent(engine: str, tmp_path: Path) -> None:
    assert main([*MLPS, "--out", str(tmp_path / "serial")]) == 0
    extra = ["--engine", engine] + (["--workers", "2", "--worker-timeout", "600"] if engine == "processes" else [])
    assert main([*MLPS, *extra, "--out", str(tmp_path / engine)]) == 0
    serial = [json.loads(line) for line in (tmp_path / "serial" / "metrics.jsonl").read_text().splitlines()]
    other = [json.loads(line) for line in (tmp_path / engine / "metrics.jsonl").read_text().splitlines()]
    assert len(serial) == 3
    assert json.loads((tmp_path / "serial" / "summary.json").read_text())["model_family"] == "mlps"
    for a, b in zip(serial, other, strict=True):
        assert a["accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["vectorized", "processes"])
def test_a_convolutional_family_on_mnist_is_engine_independent(engine: str, tmp_path: Path) -> None:
    argv = ["run", "--algorithm", "local", "--model-family", "HCNNs8", "--dataset", "mnist-5k", "--clients", "16",
            "--rounds", "1", "--quiet", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "serial")]) == 0
    # a generous heartbeat timeout: worker start-up (imports, model builds) on a loaded 2-core machine
    extra = ["--engine", engine] + (["--workers", "2", "--worker-timeout", "600"] if engine == "processes" else [])
    assert main([*argv, *extra, "--out", str(tmp_path / engine)]) == 0
    serial = (tmp_path / "serial" / "metrics.jsonl").read_text().splitlines()
    other = (tmp_path / engine / "metrics.jsonl").read_text().splitlines()
    for a, b in zip(serial, other, strict=True):
        assert json.loads(a)["accuracy"] == pytest.approx(json.loads(b)["accuracy"], abs=1e-6)
    assert json.loads(serial[-1])["accuracy"] > 0.5  # 8 CNNs after one epoch on real digits


@pytest.mark.slow
@pytest.mark.parametrize("label", ["resnet152", "vit_b_16+vit"])
def test_full_size_members_take_a_training_step(label: str) -> None:
    family = build_family("HtM-img-10", {})
    model = family.build_member(label, (3, 32, 32), 10, seed=1)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    loss.backward()
    with torch.no_grad():
        stepped = {n: p - 0.01 * p.grad for n, p in params.items()}
    after = torch.nn.functional.cross_entropy(torch.func.functional_call(model, stepped, (x,)), y)
    assert torch.isfinite(loss) and torch.isfinite(after)
    assert all(p.grad is not None for p in params.values())
    assert model.feature_dim == 512 and model(x, part="body").shape == (4, 512)


def test_an_unknown_family_is_one_clear_error(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    msg = one_error(capsys, [*MLPS[:4], "HtFE-img-7", *MLPS[5:12]], tmp_path / "x")
    assert "unknown model family 'HtFE-img-7'" in msg and "htfe-img-8" in msg


def test_model_and_model_family_together_are_refused(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    msg = one_error(capsys, [*MLPS, "--model", "mlp"], tmp_path / "x")
    assert "give one of them" in msg


def test_a_parameter_averaging_algorithm_refuses_a_family(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    msg = one_error(capsys, [*MLPS, "--algorithm", "fedavg"], tmp_path / "x")
    assert "--model-family mlps gives clients different architectures" in msg


def test_a_method_needing_one_head_refuses_heterogeneous_heads(capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Local, "needs_homogeneous_head", True)  # as LG-FedAvg, FedGen, FedGH declare it
    cfg = resolve_config(build_config({"algorithm": "local", "model_family": "mlps", "clients": 4, "rounds": 1,
                                       "dataset": "digits", "out": "-", "device": "cpu"}))
    build_experiment(cfg, load_data(cfg, torch.device("cpu")), torch.device("cpu"))  # MLPs: Linear(D, C) for all
    msg = one_error(capsys, ["run", "--algorithm", "local", "--model", "mlp,logreg", "--dataset", "digits",
                             "--clients", "4", "--rounds", "1", "--device", "cpu"], tmp_path / "x")
    assert "local needs every client to have the same head" in msg and "--model mlp,logreg" in msg


def test_heterogeneous_heads_of_an_htc_family_are_detected() -> None:
    family = build_family("HtFE-img-8-HtC-img-4", {"feature_dim": 16})
    same = [family.build_member("cnn", (1, 16, 16), 10, 1), family.build_member("resnet4", (1, 16, 16), 10, 1)]
    check_homogeneous_heads(same, "lg-fedavg", "--model-family htfe-img-2")
    htc = [family.build_member(label, (1, 16, 16), 10, 1) for label in ("cnn+htc-512", "resnet4+htc-512-256")]
    with pytest.raises(ConfigError, match="lg-fedavg needs every client to have the same head"):
        check_homogeneous_heads(htc, "lg-fedavg", "--model-family htfe-img-8-htc-img-4")


def test_bad_family_options_are_one_clear_error(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    msg = one_error(capsys, [*MLPS[:-1], "0"], tmp_path / "x")
    assert "mlps.feature_dim must be >= 1, got 0" in msg


@pytest.mark.slow
def test_batch_norm_members_run_serially_on_the_vectorized_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A pack pads partial batches with zero-weight samples, which would change BatchNorm's batch statistics:
    the vectorized engine runs such models serially (one warning), so the run equals the serial engine's."""
    from fedloom.models.families import FAMILIES, family

    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))  # a test-only family, gone afterwards
    family("test-small-resnets", ("resnet4", "hcnn2"))
    argv = ["run", "--algorithm", "local", "--model-family", "test-small-resnets", "--dataset", "mnist-5k",
            "--clients", "4", "--rounds", "1", "--quiet", "--device", "cpu", "--test-small-resnets.feature-dim", "16"]
    assert main([*argv, "--out", str(tmp_path / "serial")]) == 0
    with caplog.at_level("WARNING"):
        assert main([*argv, "--engine", "vectorized", "--out", str(tmp_path / "vectorized")]) == 0
    assert "normalises over the batch" in caplog.text
    serial = (tmp_path / "serial" / "metrics.jsonl").read_text().splitlines()
    packed = (tmp_path / "vectorized" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(a)["accuracy"] for a in serial] == [json.loads(b)["accuracy"] for b in packed]


def test_the_vectorized_engine_knows_which_models_normalise_over_the_batch() -> None:
    from types import SimpleNamespace

    from fedloom.engines.vectorized import normalises_over_batch

    family = build_family("HtFE-img-9", {"feature_dim": 16})
    resnet, mlp = family.build_member("resnet4", (1, 16, 16), 10, 1), build_family("MLPs", {}).build_member(
        "amazon-mlp", (64,), 10, 1)
    assert normalises_over_batch(SimpleNamespace(architectures=None, model=resnet))
    assert not normalises_over_batch(SimpleNamespace(architectures=None, model=mlp))
    assert normalises_over_batch(SimpleNamespace(architectures=SimpleNamespace(models=(mlp, resnet)), model=mlp))


def test_a_family_that_does_not_fit_the_data_is_one_clear_error(capsys: pytest.CaptureFixture,
                                                                  tmp_path: Path) -> None:
    msg = one_error(capsys, [*MLPS[:4], "HCNNs8", *MLPS[5:12]], tmp_path / "x")  # digits are 8x8
    assert "architecture 'hcnn1' needs 1- or 3-channel images of at least 16x16" in msg
    msg = one_error(capsys, [*MLPS[:4], "HtFE-txt-2", *MLPS[5:12]], tmp_path / "y")
    assert "architecture 'fasttext' needs token sequences" in msg
