"""FedKTL: clients align their features to the generated latents and predict by cosine to the ETF; the server
aligns uploaded prototypes to the generator's latent space and decodes one image per class; the generator
interface (sample_latents, decode), the small VAE's cache and seeding; a missing checkpoint is one clear error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fedloom.algorithms.fedktl import (GeneratedBatches, arcface, class_centroids, etf_cosine, simplex_etf,
                                       transformer_forward)
from fedloom.cli import main
from fedloom.errors import ConfigError
from fedloom.models.generators import GeneratorSpec, fit_images, load_generator, small_vae

from htfl_helpers import C, mixed, predictions, start, table_bytes, train_round

FAST = dict(generator_epochs=2, server_epochs=3, w_dim=16)


def test_the_etf_is_a_simplex() -> None:
    etf = simplex_etf(C, torch.Generator().manual_seed(0))
    gram = etf @ etf.T
    assert torch.allclose(gram.diagonal(), torch.ones(C), atol=1e-5)
    off = gram[~torch.eye(C, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1 / (C - 1)), atol=1e-5)


def test_prediction_is_the_cosine_to_the_etf() -> None:
    exp = mixed("fedktl", **FAST)
    _, server = train_round(exp, start(exp), 1)
    for client in (0, 1):
        ctx = exp.runtime.client_context(client, 1)
        state = exp.runtime.store.load(client)
        x, _ = ctx.data(ctx.test_indices)
        out = ctx.apply(state["params"], x)
        expected = (F.normalize(out, dim=1) @ server.broadcast.extra["etf"].T).argmax(1)
        predictor = exp.algorithm.eval_params(ctx, server.broadcast, state)
        assert torch.equal(predictions(exp, predictor, client), expected)
        rotated = dict(server.broadcast.extra, etf=server.broadcast.extra["etf"].roll(1, 0))
        other = exp.algorithm.eval_params(ctx, type(server.broadcast)(params={}, extra=rotated), state)
        assert not torch.equal(predictions(exp, other, client), expected)  # the ETF decides, not the raw argmax


def test_arcface_by_hand() -> None:
    cosine = torch.tensor([[0.5, 0.1, -0.2]])
    y = torch.tensor([0])
    logits = torch.tensor([[math.cos(math.acos(0.5) + 0.5), 0.1, -0.2]]) * 64
    assert torch.allclose(arcface(cosine, y, 0.5, 64.0), F.cross_entropy(logits, y, reduction="none"))


def test_clients_align_features_to_the_generated_latents() -> None:
    exp = mixed("fedktl", mu=50.0, **FAST)
    _, server = train_round(exp, start(exp), 1)
    extra = server.broadcast.extra
    assert extra["images"].shape[0] == C and extra["latents"].shape == (C, 16)
    ctx = exp.runtime.client_context(0, 2)  # an MLP client: its body has weights for the transfer to move
    params = exp.runtime.store.load(0)["params"]
    x, y = ctx.data(ctx.train_indices[:16])
    images = fit_images(extra["images"], tuple(x.shape[1:]))
    batches = GeneratedBatches(images, extra["latents"], 16, torch.Generator().manual_seed(3))
    w = {**params, "proj/weight": extra["proj"]["weight"], "proj/bias": extra["proj"]["bias"]}
    loss = exp.algorithm.loss(ctx.apply, extra["etf"], batches)(w, x, y, None)
    order = torch.randperm(C, generator=torch.Generator().manual_seed(3))
    feats = ctx.apply(params, images[order], "body")
    transfer = F.mse_loss(F.linear(feats, extra["proj"]["weight"], extra["proj"]["bias"]), extra["latents"][order])
    by_hand = arcface(etf_cosine(ctx.apply(params, x), extra["etf"]), y, 0.5, 64.0) + 50.0 * transfer
    assert torch.allclose(loss, by_hand, atol=1e-4)
    state = {"params": params}
    aligned = exp.algorithm.client_update(ctx, server.broadcast, state).state["params"]
    free = mixed("fedktl", mu=0.0, **FAST).algorithm.client_update(ctx, server.broadcast, state).state["params"]
    assert not torch.allclose(aligned["body.1.weight"], free["body.1.weight"], atol=1e-4)  # the transfer reaches the body


def test_server_centroids_are_class_means_of_the_transformed_prototypes_and_are_decoded() -> None:
    exp = mixed("fedktl", **FAST)
    result, server = train_round(exp, start(exp), 1)
    assert result.bytes_up == table_bytes(exp, C)  # one C-dim prototype per held class
    from fedloom.algorithms import _htfl as H

    protos, labels = H.uploaded_pairs(result.uploads)
    q = transformer_forward(server.state.extra["transformer"], protos, train=False)
    means = class_centroids(q, labels, torch.zeros(C, 16))
    held = torch.zeros(C, dtype=torch.bool)
    held[labels] = True
    assert torch.allclose(server.state.extra["centroids"][held], means[held], atol=1e-5)
    G = load_generator(exp.algorithm.spec(exp.runtime.seed))
    assert torch.allclose(server.broadcast.extra["images"], G.decode(server.state.extra["centroids"]), atol=1e-6)
    idle = mixed("fedktl", **{**FAST, "server_epochs": 0}).algorithm
    assert not torch.allclose(idle.server_update(start(exp).state, result.uploads).state.extra["transformer"][
        "fc2.weight"], server.state.extra["transformer"]["fc2.weight"])


def test_small_vae_interface_cache_and_seed(tmp_path: Path) -> None:
    spec = GeneratorSpec(public_data="digits", w_dim=8, epochs=1, seed=1, cache_dir=str(tmp_path))
    first = small_vae(spec)
    assert len(list(tmp_path.iterdir())) == 1
    again = small_vae(spec)  # read back from the cache
    assert all(torch.equal(first.params[k], again.params[k]) for k in first.params)
    other = small_vae(GeneratorSpec(public_data="digits", w_dim=8, epochs=1, seed=2, cache_dir=str(tmp_path)))
    assert not torch.equal(first.params["dec.0.weight"], other.params["dec.0.weight"])
    w = first.sample_latents(5, torch.Generator().manual_seed(0))
    images = first.decode(w)
    assert w.shape == (5, 8) and images.shape == (5, 1, 8, 8) and images.abs().max() <= 1
    assert fit_images(images, (3, 16, 16)).shape == (5, 3, 16, 16)


@pytest.mark.parametrize("kind", ["stylegan-xl", "stylegan3", "stable-diffusion"])
def test_a_missing_generator_checkpoint_is_one_clear_error(kind: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    code = main(["run", "--algorithm", "fedktl", "--dataset", "digits", "--fedktl.generator", kind,
                 "--fedktl.generator-path", str(tmp_path / "nothing.pkl"), "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "does not exist" in err[0] and "nothing.pkl" in err[0]
    assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="needs a local checkpoint"):
        load_generator(GeneratorSpec(kind=kind))
    with pytest.raises(ConfigError, match="generator"):
        load_generator(GeneratorSpec(kind="no-such-gan"))
