"""benchmarks/parity: the fedloom-vs-PFLlib criterion, the subsample and the reading of PFLlib's main.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PARITY = Path(__file__).resolve().parents[2] / "benchmarks" / "parity"
sys.path.insert(0, str(PARITY))

import compare  # noqa: E402
import pfllib_side  # noqa: E402

FAKE_MAIN = '''
import argparse
from flcore.servers.serveravg import FedAvg
from flcore.servers.serverditto import Ditto
def run(args):
    for i in range(1):
        if args.algorithm == "FedAvg":
            args.head = copy.deepcopy(args.model.fc)
            args.model = BaseHeadSplit(args.model, args.head)
            server = FedAvg(args, i)

        elif args.algorithm == "Ditto":
            server = Ditto(args, i)

        else:
            raise NotImplementedError
if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument('-lr', "--local_learning_rate", type=float, default=0.005)
    parser.add_argument('-mu', "--mu", type=float, default=0.0)
    args = parser.parse_args()
    run(args)
'''


def _curves(fl: list[list[float]], pf: list[list[float]]) -> dict:
    def rows(seeds: list[list[float]]) -> dict:
        return {s: [{"round": r, "accuracy": a, "client_accuracy": [a, a]} for r, a in enumerate(curve)]
                for s, curve in enumerate(seeds, 1)}
    return {"fedloom": rows(fl), "pfllib": rows(pf)}


def test_criterion_is_the_larger_seed_range() -> None:
    # round 1: means 0.50 vs 0.45, ranges 0.02 and 0.06 -> |d| = 0.05 <= 0.06: within
    # round 2: means 0.80 vs 0.70, ranges 0.02 and 0.04 -> |d| = 0.10 > 0.04: outside
    curves = _curves([[0.1, 0.49, 0.79], [0.1, 0.51, 0.81]], [[0.1, 0.42, 0.68], [0.1, 0.48, 0.72]])
    stats = {s["round"]: s for s in compare.round_stats(curves, 2)}
    assert stats[1]["diff"] == pytest.approx(0.05) and stats[1]["spread"] == pytest.approx(0.06)
    assert stats[1]["within"] and not stats[2]["within"]
    assert stats[2]["diff"] == pytest.approx(0.10) and stats[2]["spread"] == pytest.approx(0.04)
    assert compare.client_gap(curves, 2) == pytest.approx(0.10)


def test_chance_rate_of_the_criterion() -> None:
    """How often the criterion flags a round when both sides draw from one distribution: 4.9% at 3 seeds a
    side, falling fast with more seeds (< 0.1% at 6)."""
    assert compare.chance_rate(3, 3) == pytest.approx(0.049, abs=0.003)
    assert compare.chance_rate(6, 6) < 0.001 < compare.chance_rate(3, 6) < compare.chance_rate(3, 3)
    summary = [{"seeds": 3, "by_round": {0: {}, 1: {}, 2: {}}, "outside": [2]}]
    line = compare.chance_line(summary)
    assert line.startswith("Flagged rounds: 1 of 2 compared") and "chance if no method differed: 0.1" in line


def test_rounds_not_reached_by_every_seed_are_left_out() -> None:
    curves = _curves([[0.1, 0.5, 0.8], [0.1, 0.5]], [[0.1, 0.5, 0.8], [0.1, 0.5, 0.8]])
    assert [s["round"] for s in compare.round_stats(curves, 2)] == [0, 1]


def test_pfllib_parser_and_server_class_read_from_main_source() -> None:
    parser = pfllib_side.pfllib_parser(FAKE_MAIN)
    args = parser.parse_args([])
    assert args.local_learning_rate == 0.005 and args.mu == 0.0
    assert pfllib_side.server_class_of(FAKE_MAIN, "FedAvg") == ("flcore.servers.serveravg", "FedAvg", True)
    assert pfllib_side.server_class_of(FAKE_MAIN, "Ditto") == ("flcore.servers.serverditto", "Ditto", False)
    with pytest.raises(SystemExit):
        pfllib_side.server_class_of(FAKE_MAIN, "FedNova")


def test_subsample_keeps_fraction_minimum_and_a_valid_hash(tmp_path: Path) -> None:
    from fedloom.data.cache import content_hash
    sizes = [200, 30, 8]
    train = [np.arange(i * 1000, i * 1000 + n) for i, n in enumerate(sizes)]
    test = [np.arange(i * 1000 + 500, i * 1000 + 500 + n // 2) for i, n in enumerate(sizes)]
    src = tmp_path / "clients.npz"
    np.savez(src, manifest=np.array(json.dumps({"partition_hash": content_hash(train, test)})),
             train_indices=np.concatenate(train), train_offsets=np.cumsum([0] + sizes),
             test_indices=np.concatenate(test), test_offsets=np.cumsum([0] + [n // 2 for n in sizes]))
    out = tmp_path / "sub" / "clients.npz"
    subprocess.run([sys.executable, str(PARITY / "subsample.py"), str(src), "--fraction", "0.1", "--out", str(out),
                    "--min-train", "20", "--min-test", "5"], check=True, capture_output=True)
    sub = np.load(out)
    kept = np.diff(sub["train_offsets"])
    assert kept.tolist() == [20, 20, 8]  # max(20, ceil(0.1 n)), or all of a smaller client
    assert np.diff(sub["test_offsets"]).tolist() == [10, 5, 4]
    parts = [sub["train_indices"][a:b] for a, b in zip(sub["train_offsets"][:-1], sub["train_offsets"][1:])]
    assert all(np.isin(p, t).all() for p, t in zip(parts, train))  # each client keeps only its own samples
    tparts = [sub["test_indices"][a:b] for a, b in zip(sub["test_offsets"][:-1], sub["test_offsets"][1:])]
    assert json.loads(sub["manifest"].item())["partition_hash"] == content_hash(parts, tparts)


# ----------------------------------------------------------------------------- the method mappings (methods.py)
import methods  # noqa: E402


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_mapping_is_a_valid_fedloom_run(name: str) -> None:
    """The fedloom half of every mapping is what fedloom_side.py hands to api.run: a registered algorithm and
    options its dataclass accepts (an option renamed in fedloom would otherwise only surface in a long run)."""
    from fedloom.algorithms.base import ALGORITHMS
    from fedloom.api import make_config
    from fedloom.config import component_options
    spec = methods.METHODS[name]
    cfg = make_config({**methods.COMMON_FEDLOOM, "dataset": "fashion-mnist", "algorithm": name,
                       **spec.fedloom_options})
    component_options(ALGORITHMS, name, cfg)  # raises ConfigError on an unknown or out-of-range option
    assert spec.pfllib_model in ("cnn", "cnn-bn") and spec.pfllib_model == (
        "cnn-bn" if cfg.model == "cnn-bn" else "cnn")  # both sides on the same architecture


def test_fedloom_run_keys_and_algorithm_options_are_kept_apart() -> None:
    # FedBN's model and eval batch are run keys; an algorithm's own options sit under its name
    assert methods.METHODS["fedbn"].fedloom_options == {"model": "cnn-bn", "eval_batch_size": 10}
    assert methods.METHODS["fml"].fedloom_options["fml"]["detach_targets"] is False
    assert set(methods.PRIORITY) == set(methods.METHODS) and len(methods.PRIORITY) == len(methods.METHODS)


def test_pfllib_side_bn_cnn_is_fedloom_cnn_bn() -> None:
    """FedBN's model on PFLlib's side is layer for layer fedloom's cnn-bn: same parameter shapes in the same order,
    the same BN parameters kept local by PFLlib's rule ("bn" in the name) and fedloom's (is_batch_norm), the
    same head layer (fc 512 -> C), and the same function once the weights are copied across."""
    import torch

    from fedloom.models.base import MODELS
    from fedloom.models.cnn_bn import is_batch_norm
    torch.manual_seed(0)
    ours = MODELS.get("cnn-bn")().build((1, 28, 28), 10)
    theirs = pfllib_side.FedAvgCNNBN(1, 10, 1024)
    a, b = list(ours.named_parameters()), list(theirs.named_parameters())
    assert [p.shape for _, p in a] == [p.shape for _, p in b]
    assert [is_batch_norm(n) for n, _ in a] == ["bn" in n for n, _ in b] == [
        False, False, True, True, False, False, True, True, False, False, False, False]
    assert tuple(ours.head.weight.shape) == tuple(theirs.fc.weight.shape) == (10, 512)
    with torch.no_grad():
        for (name, p), (_, q) in zip(a, b):
            if is_batch_norm(name):  # move BN's affine parameters off their default 1 / 0
                p.add_(0.1 * torch.randn_like(p))
            q.copy_(p)
    x = torch.randn(7, 1, 28, 28)
    ours.eval(), theirs.eval()  # batch statistics in evaluation on both sides (track_running_stats=False)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


PFLLIB = Path(os.environ.get("PFLLIB_DIR", "/tmp/pfllib"))


@pytest.mark.skipif(not (PFLLIB / "system" / "main.py").exists(), reason="no PFLlib checkout (set PFLLIB_DIR)")
def test_every_mapping_names_pfllib_algorithms_and_argparse_dests() -> None:
    """Against a real PFLlib checkout: every -algo name has a branch in main.py, every flag is an argparse dest,
    and the head split main.py applies is the one fedloom's body/head split matches (fc 512 -> C)."""
    src = (PFLLIB / "system" / "main.py").read_text()
    dests = set(vars(pfllib_side.pfllib_parser(src).parse_args([])))
    for spec in methods.METHODS.values():
        pfllib_side.server_class_of(src, spec.pfllib)  # SystemExit when main.py has no such branch
        assert set(spec.pfllib_args) | set(methods.COMMON_PFLLIB) <= dests, spec.name
    sys.path.insert(0, str(PFLLIB / "system"))
    try:
        from flcore.trainmodel.models import FedAvgCNN
    finally:
        sys.path.remove(str(PFLLIB / "system"))
    from fedloom.models.base import MODELS
    theirs, ours = FedAvgCNN(1, 10, 1024), MODELS.get("cnn")().build((1, 28, 28), 10)
    assert [p.shape for p in theirs.parameters()] == [p.shape for p in ours.parameters()]
    assert [p.shape for p in theirs.fc.parameters()] == [p.shape for p in ours.head.parameters()]  # the split


def test_drops_head_only_where_main_replaces_fc_without_a_split() -> None:
    fake = FAKE_MAIN.replace('''        elif args.algorithm == "Ditto":''', '''        elif args.algorithm == "FedPCL":
            args.model.fc = nn.Identity()
            server = FedPCL(args, i)

        elif args.algorithm == "Ditto":''')
    assert pfllib_side.drops_head(fake, "FedPCL")
    assert not pfllib_side.drops_head(fake, "FedAvg")  # a head split keeps the fc as the head
    assert not pfllib_side.drops_head(fake, "Ditto")


@pytest.mark.skipif(not (PFLLIB / "system" / "main.py").exists(), reason="no PFLlib checkout (set PFLLIB_DIR)")
def test_fedcac_mechanism_equals_pfllibs_own_functions_on_the_same_models() -> None:
    """check_fedcac.py: PFLlib's mask, customization and set_parameters beside fedloom's on the same models."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "parity" / "check_fedcac.py"
    out = subprocess.run([sys.executable, str(script), "--pfllib", str(PFLLIB), "--clients", "4", "--rounds", "3"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("round")]
    assert len(rows) == 3
    for line in rows:
        worst = float(line.split("= ")[1].split(";")[0])
        assert worst < 1e-6 and "100.0000%" in line, line
