"""Snowball's bottom-up and top-down elections on a constructed cohort (Qin et al., AAAI 2024)."""

from __future__ import annotations

import pytest
import torch

from fedloom.errors import ConfigError
from fedloom.pipeline.context import AggregationContext
from fedloom.pipeline.defenses.snowball import Snowball, SnowballMinus, bottom_up, election_layers

MALICIOUS = frozenset({0, 1, 9, 13})  # 4 of 20 (the paper's 20%), the first positions among them


def cohort(seed: int = 0, malicious: frozenset = MALICIOUS, attacker_noise: float = 0.5) -> list:
    """20 uploads: benign ones are a common update plus small noise (std 0.1); the malicious ones add a shared
    shift (a backdoor direction) plus noise of their own (``attacker_noise``) on every layer but body.3.

    The bottom-up election is a vote among peers weighted by how well each voter's clustering separates (its
    Calinski–Harabasz score): it elects the largest group of mutually similar uploads. Attackers that are
    tighter than the benign clients (identical backdoor updates, no heterogeneity) can out-vote them on
    synthetic data, which is why the constructed attackers here differ from each other more than benign
    clients do, as real backdoored clients with their own non-IID data do."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"body.0.weight": (3, 2), "body.0.bias": (2,), "body.3.weight": (5,), "head.weight": (2, 2)}
    common = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    shift = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    out = []
    for client in range(20):
        tree = {k: common[k] + 0.1 * torch.randn(s, generator=gen) for k, s in shapes.items()}
        if client in malicious:
            tree = {k: v + (shift[k] + attacker_noise * torch.randn(s, generator=gen) if k != "body.3.weight"
                            else 0) for (k, v), s in zip(tree.items(), shapes.values())}
        out.append((client, tree, 1.0 + client % 3))
    return out


def context(round_: int) -> AggregationContext:
    return AggregationContext(seed=3, round=round_, global_params={}, malicious=MALICIOUS)


SMALL_VAE = dict(vae_hidden=32, vae_latent=4, vae_initial_epochs=40, vae_tuning_epochs=5, samples=4)


def test_election_layers_are_the_first_and_last_layers_by_default() -> None:
    tree = cohort()[0][1]
    assert election_layers(tree, "first,last") == ["body.0.weight", "body.0.bias", "head.weight"]
    assert election_layers(tree, "3.weight") == ["body.3.weight"]
    with pytest.raises(ConfigError, match="names no tensor"):
        election_layers(tree, "conv9")


def test_bottom_up_election_picks_benign_candidates() -> None:
    items = cohort()
    elected = bottom_up(items, ["body.0.weight", "body.0.bias", "head.weight"], clusters_far=3, share=0.1, seed=0)
    assert len(elected) == 2  # ceil(0.1 * 20)
    assert not set(elected) & MALICIOUS


def test_snowball_minus_aggregates_the_bottom_up_election() -> None:
    ctx = context(round_=50)
    items = cohort()
    out = SnowballMinus(ct=3).aggregate(items, ctx)
    assert ctx.metrics["admitted"] == 2.0 and ctx.metrics["admitted_fpr"] == 0.0
    assert ctx.metrics["admitted_tpr"] == pytest.approx(2 / 16)
    assert set(out) == {"body.0.weight", "body.0.bias", "body.3.weight", "head.weight"}


def test_snowball_warmup_uses_the_bottom_up_election_only() -> None:
    ctx = context(round_=4)
    Snowball(ct=3, warmup=5, **SMALL_VAE).aggregate(cohort(), ctx)
    assert ctx.metrics["snowball_topdown"] == 0.0 and ctx.metrics["admitted"] == 2.0


def test_snowball_top_down_election_grows_to_half_the_cohort_with_benign_uploads() -> None:
    ctx = context(round_=5)
    items = cohort()
    out = Snowball(ct=3, warmup=5, **SMALL_VAE).aggregate(items, ctx)
    assert ctx.metrics["snowball_topdown"] == 1.0
    assert ctx.metrics["admitted"] == 10.0  # floor(0.5 * 20)
    assert ctx.metrics["admitted_fpr"] == 0.0 and ctx.metrics["admitted_tpr"] == pytest.approx(10 / 16)
    again = Snowball(ct=3, warmup=5, **SMALL_VAE).aggregate(items, context(round_=5))
    assert all(torch.equal(out[k], again[k]) for k in out)  # seeded: the same round gives the same result


def test_snowball_vae_fused_trains_with_the_fused_adam_and_elects_the_same_benign_set(monkeypatch) -> None:
    """snowball.vae_fused hands the VAE to PyTorch's fused Adam (other rounding, same rule): on a cohort with a
    clear benign majority it elects the same uploads; left at its default it stays out of the run identity."""
    import fedloom.pipeline.defenses.vae as vae_module
    from fedloom.checkpoint import config_identity
    from fedloom.config import RunConfig

    seen: list = []
    adam = torch.optim.Adam

    def recording(params, **kwargs):
        seen.append(kwargs.get("fused"))
        return adam(params, **kwargs)

    monkeypatch.setattr(vae_module.torch.optim, "Adam", recording)
    plain_ctx, fused_ctx = context(round_=5), context(round_=5)
    Snowball(ct=3, warmup=5, **SMALL_VAE).aggregate(cohort(), plain_ctx)
    Snowball(ct=3, warmup=5, vae_fused=True, **SMALL_VAE).aggregate(cohort(), fused_ctx)
    assert None in seen and True in seen  # one run with the default Adam, one with the fused kernel
    for key in ("admitted", "admitted_tpr", "admitted_fpr"):
        assert fused_ctx.metrics[key] == plain_ctx.metrics[key]
    default = RunConfig(aggregator="snowball", options={"snowball": {"vae_fused": False, "warmup": 30}})
    assert "vae_fused" not in config_identity(default)["options"]["snowball"]
    fused = RunConfig(aggregator="snowball", options={"snowball": {"vae_fused": True, "warmup": 30}})
    assert config_identity(fused)["options"]["snowball"]["vae_fused"] is True


def test_snowball_refuses_a_cohort_too_small_for_its_clusters() -> None:
    Snowball(ct=3, share=0.4).check_cohort(5)
    with pytest.raises(ConfigError, match="raise snowball.share"):
        Snowball(ct=3).check_cohort(5)  # ceil(0.1·5) = 1 winner: no differences for the VAE
    SnowballMinus(ct=3).check_cohort(5)  # no top-down election, one winner is fine
    with pytest.raises(ConfigError, match="ct\\+2 = 12"):
        Snowball().check_cohort(11)
