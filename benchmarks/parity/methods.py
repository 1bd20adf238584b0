"""The methods fedloom shares with PFLlib (Zhang et al., "PFLlib", JMLR 2025) and the hyperparameter mapping.

Each entry: PFLlib's ``-algo`` name, PFLlib flags (argparse dest -> value) and fedloom options
(``{algorithm: {field: value}}``) that give both implementations the same hyperparameters. Run-level settings
shared by all methods (CNN, batch 10, lr 0.005, no momentum, 1 local epoch, every client every round) are in
``COMMON``. fedloom's defaults are the official run_me.sh values (docs/algorithms.md); the PFLlib flags below
set PFLlib to the same values where its argparse default differs. ``pfllib_compat`` is switched on where fedloom
has it: the question the harness answers is whether fedloom's PFLlib mode reproduces PFLlib.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# fedloom run keys  <->  PFLlib argparse dests (same meaning, same value)
COMMON_FEDLOOM: dict[str, Any] = {"model": "cnn", "batch_size": 10, "lr": 0.005, "momentum": 0.0,
                                  "local_epochs": 1, "join_ratio": 1.0, "clients": 20}
COMMON_PFLLIB: dict[str, Any] = {"model": "CNN", "batch_size": 10, "local_learning_rate": 0.005,
                                 "local_epochs": 1, "join_ratio": 1.0, "num_clients": 20, "num_classes": 10,
                                 "eval_gap": 1, "device": "cpu"}


@dataclass(frozen=True)
class Method:
    """One shared method: fedloom's registry name, PFLlib's -algo name, flags on each side."""
    name: str
    pfllib: str
    pfllib_args: dict[str, Any] = field(default_factory=dict)
    fedloom_options: dict[str, Any] = field(default_factory=dict)
    pfllib_eval: str = "evaluate"  # the server method whose evaluation PFLlib scores the method by
    # fedloom rounds before PFLlib's evaluation 0: FedDBE's initialization period is fedloom's round 1 but runs
    # in PFLlib's server constructor, so fedloom round r + 1 is PFLlib evaluation r (docs/algorithms.md)
    fedloom_offset: int = 0


def _m(name: str, pfllib: str, pfl: dict[str, Any] | None = None, opts: dict[str, Any] | None = None,
       scored: str = "evaluate") -> Method:
    return Method(name, pfllib, pfl or {}, {name: opts} if opts else {}, scored)


METHODS: dict[str, Method] = {m.name: m for m in [
    _m("fedavg", "FedAvg"),
    _m("fedprox", "FedProx", {"mu": 0.01}, {"mu": 0.01}),
    _m("local", "Local"),
    _m("ditto", "Ditto", {"mu": 0.1, "plocal_epochs": 1}, {"mu": 0.1, "personal_epochs": 1},
       "evaluate_personalized"),
    _m("apfl", "APFL", {"alpha": 1.0}, {"alpha": 1.0, "pfllib_compat": True}),
    # PFLlib's beta default is 0.0; fedloom's beta None means beta = lr
    _m("per-fedavg", "PerAvg", {"beta": 0.005}, {"pfllib_compat": True}, "evaluate_one_step"),
    _m("pfedme", "pFedMe", {"lamda": 15.0, "p_learning_rate": 0.01, "K": 5, "beta": 1.0},
       {"lamda": 15.0, "personal_lr": 0.01, "K": 5, "beta": 1.0, "pfllib_compat": True}, "evaluate_personalized"),
    _m("fedfomo", "FedFomo", {"M": 5}, {"M": 5}),
    _m("fedamp", "FedAMP", {"alphaK": 1.0, "sigma": 1.0, "lamda": 1.0},
       {"alpha_k": 1.0, "sigma": 1.0, "lamda": 1.0, "pfllib_compat": True}),
    _m("apple", "APPLE", {"dr_learning_rate": 0.01, "mu": 0.1, "L": 1.0},
       {"dr_lr": 0.01, "mu": 0.1, "L": 1.0, "pfllib_compat": True}),
    _m("fedper", "FedPer"),
    _m("fedrep", "FedRep", {"plocal_epochs": 1}, {"head_epochs": 1}),
    _m("fedrod", "FedROD"),
    _m("fedbabu", "FedBABU", {"fine_tuning_epochs": 10}, {"finetune_epochs": 10}),
    _m("fedphp", "FedPHP", {"mu": 0.9, "lamda": 0.01}, {"mu": 0.9, "lamda": 0.01, "pfllib_compat": True}),
    _m("fedala", "FedALA", {"eta": 1.0, "rand_percent": 80, "layer_idx": 2},
       {"eta": 1.0, "rand_percent": 80, "layer_idx": 2, "pfllib_compat": True}),
    _m("fedcp", "FedCP", {"lamda": 5.0}, {"lamda": 5.0, "pfllib_compat": True}),
    _m("gpfl", "GPFL", {"lamda": 0.01, "mu": 0.1}, {"lamda": 0.01, "mu": 0.1}),
    Method("feddbe", "FedDBE", {"momentum": 1.0, "kl_weight": 50.0},
           {"feddbe": {"momentum": 1.0, "kl_weight": 50.0}}, fedloom_offset=1),
    _m("scaffold", "SCAFFOLD", {"server_learning_rate": 1.0}, {"global_lr": 1.0}),
    _m("feddyn", "FedDyn", {"alpha": 0.01}, {"alpha": 0.01}),
    _m("moon", "MOON", {"mu": 1.0, "tau": 0.5}, {"mu": 1.0, "tau": 0.5}),
    _m("fedcac", "FedCAC", {"tau": 0.5, "beta": 170}, {"tau": 0.5, "beta": 170}),
]}

# the order the brief asks for when the budget cannot cover every method
PRIORITY = ["gpfl", "fedavg", "ditto", "fedprox", "fedrep", "fedala", "feddbe", "fedper", "fedrod", "local",
            "fedbabu", "fedcp", "apfl", "per-fedavg", "fedfomo", "fedamp", "fedphp", "scaffold", "moon",
            "feddyn", "apple", "pfedme"]
