"""Bytes per round equal what each pFL baseline actually communicates."""

import pytest

from fedloom.algorithms.tree import tree_bytes, tree_select
from fedloom.models.base import is_body

from pfl_helpers import experiment, start, train_round

MODEL_METHODS = ["ditto", "pfedme", "apfl", "per-fedavg", "fedphp", "fedrod", "fedamp", "apple"]
BODY_METHODS = ["fedper", "fedrep", "fedbabu"]


@pytest.mark.parametrize("name", MODEL_METHODS + BODY_METHODS)
def test_upload_bytes_are_the_model_or_the_body(name: str) -> None:
    exp = experiment(name)
    result, _ = train_round(exp, start(exp), 1)
    init = exp.runtime.init_params
    per_client = tree_bytes(tree_select(init, is_body)) if name in BODY_METHODS else tree_bytes(init)
    assert result.bytes_up == exp.data.num_clients * per_client


def test_downloads_are_the_body_the_cores_or_the_personal_mix() -> None:
    init_bytes = None
    for name, expected in [("fedper", "body"), ("apple", "cores"), ("fedamp", "model"), ("fedfomo", "top-m")]:
        exp = experiment(name)
        init = exp.runtime.init_params
        init_bytes = tree_bytes(init)
        n = exp.data.num_clients
        _, after = train_round(exp, start(exp), 1)
        got = after.broadcast.nbytes(0)
        if expected == "body":
            assert got == tree_bytes(tree_select(init, is_body))
        elif expected == "cores":
            assert got == n * init_bytes + 4 * n  # every client's core and the sample fractions p0
        elif expected == "model":
            assert got == init_bytes  # u_i only
        else:
            m = min(5, n)
            assert got == m * init_bytes + 8 * m  # M models and their client ids
    assert init_bytes


def test_fedfomo_upload_is_the_model_plus_one_weight_per_received_model() -> None:
    exp = experiment("fedfomo")
    first, server = train_round(exp, start(exp), 1)
    n, init = exp.data.num_clients, tree_bytes(exp.runtime.init_params)
    assert first.bytes_up == n * init  # round 1: nothing received, no weights
    second, _ = train_round(exp, server, 2)
    assert second.bytes_up == n * (init + 4 * min(5, n))
