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
    # PFLlib's -gr is rounds + this: FedBABU's server trains global_rounds + 1 times, evaluating before each, then
    # fine-tunes and evaluates once more; with -gr R - 1 that last evaluation comes after R trainings and the
    # fine-tuning, as fedloom's round R does (finetune_epochs in the last round), and is PFLlib's evaluation R
    pfllib_rounds_offset: int = 0
    # the model on PFLlib's side: "cnn" = main.py's FedAvgCNN(1, 10, 1024); "cnn-bn" = the harness's conv-BN
    # FedAvgCNN (pfllib_side.FedAvgCNNBN), the architecture of fedloom's --model cnn-bn, for FedBN (PFLlib has no
    # BatchNorm CNN for 1x28x28 inputs: with -m CNN its FedBN has no BN layer and is FedAvg)
    pfllib_model: str = "cnn"
    # a known difference between the two codes that the mapping cannot remove (docs/results/pfllib-parity.md)
    known_gap: str = ""


def _m(name: str, pfllib: str, pfl: dict[str, Any] | None = None, opts: dict[str, Any] | None = None,
       scored: str = "evaluate", run: dict[str, Any] | None = None, **extra: Any) -> Method:
    """``opts`` are the algorithm's own options (``--<name>.<field>``), ``run`` top-level fedloom run keys."""
    return Method(name, pfllib, pfl or {}, {**(run or {}), **({name: opts} if opts else {})}, scored, **extra)


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
    # PFLlib's clients train one after another on shared cores, in id order: fedloom's cyclic pattern
    _m("apple", "APPLE", {"dr_learning_rate": 0.01, "mu": 0.1, "L": 1.0},
       {"dr_lr": 0.01, "mu": 0.1, "L": 1.0, "pfllib_compat": True}, run={"pattern": "cyclic"}),
    _m("fedper", "FedPer"),
    _m("fedrep", "FedRep", {"plocal_epochs": 1}, {"head_epochs": 1}),
    _m("fedrod", "FedROD"),
    _m("fedbabu", "FedBABU", {"fine_tuning_epochs": 10}, {"finetune_epochs": 10}, pfllib_rounds_offset=-1),
    # serverphp.train is the one PFLlib loop that evaluates after its clients train (evaluation i follows i + 1
    # trainings): fedloom round r + 1 is PFLlib evaluation r, as for FedDBE (fedloom then runs R + 1 rounds, so
    # its HPM schedule μ(t − 1)/T has T = R + 1 where PFLlib's has R: the HPM only enters the λ = 0.01 MMD term)
    _m("fedphp", "FedPHP", {"mu": 0.9, "lamda": 0.01}, {"mu": 0.9, "lamda": 0.01, "pfllib_compat": True},
       fedloom_offset=1),
    _m("fedala", "FedALA", {"eta": 1.0, "rand_percent": 80, "layer_idx": 2},
       {"eta": 1.0, "rand_percent": 80, "layer_idx": 2, "pfllib_compat": True}),
    _m("fedcp", "FedCP", {"lamda": 5.0}, {"lamda": 5.0, "pfllib_compat": True}),
    _m("gpfl", "GPFL", {"lamda": 0.01, "mu": 0.1}, {"lamda": 0.01, "mu": 0.1}),
    Method("feddbe", "FedDBE", {"momentum": 1.0, "kl_weight": 50.0},
           {"feddbe": {"momentum": 1.0, "kl_weight": 50.0}}, fedloom_offset=1),
    _m("scaffold", "SCAFFOLD", {"server_learning_rate": 1.0}, {"global_lr": 1.0}),
    _m("feddyn", "FedDyn", {"alpha": 0.01}, {"alpha": 0.01}),
    _m("moon", "MOON", {"mu": 1.0, "tau": 0.5}, {"mu": 1.0, "tau": 0.5}),
    # --- the remaining methods fedloom shares with PFLlib (issue 28, docs/results/pfllib-parity.md) ---
    # PFLlib's -bt/--beta defaults to 0 (int 0 fails FedCAC's own assert) and -tau to 1: both set
    # PFLlib sends no customized model after the first round (its send_models skips epoch 0), so in round 2 a
    # client's critical parameters come from its constructor copy of the initial model: pfllib_compat does that
    _m("fedcac", "FedCAC", {"tau": 0.5, "beta": 170}, {"tau": 0.5, "beta": 170, "pfllib_compat": True}),
    # the eval batch matters only here: BN normalises with the statistics of the batch it is given, and PFLlib
    # evaluates in batches of -lbs (10)
    _m("fedbn", "FedBN", run={"model": "cnn-bn", "eval_batch_size": 10}, pfllib_model="cnn-bn"),
    # PFLlib's server calibrates every client with the label counts of all clients summed: fedloom's compat
    _m("fedlc", "FedLC", {"tau": 1.0}, {"tau": 1.0, "pfllib_compat": True}),
    # PFLlib's -bt default 0 would make FedNTD FedAvg; its server averages unweighted: fedloom's compat
    _m("fedntd", "FedNTD", {"beta": 1.0, "tau": 1.0}, {"beta": 1.0, "tau": 1.0, "pfllib_compat": True}),
    # PFLlib's server hands each client the alphas solved for another (two client orders) and mixes in a sweep
    _m("fedpac", "FedPAC", {"lamda": 1.0}, {"lamda": 1.0, "pfllib_compat": True}),
    # alignment lr 0.01, batch 16, 1 epoch are hard-coded in PFLlib's clientas.py; fedloom's defaults are those
    _m("fedas", "FedAS", {}, {"align_lr": 0.01, "align_epochs": 1, "align_batch": 16}),
    # PFLlib's prototypes are collected during training (fedloom's pfllib_compat); the default makes a pass after it
    _m("fedproto", "FedProto", {"lamda": 1.0}, {"lam": 1.0, "pfllib_compat": True},
       known_gap="round 0: PFLlib scores 0 before global prototypes exist, fedloom scores with the head"),
    # PFLlib's FD uses the raw mean logits as CE soft targets: fedloom's target=raw
    _m("fd", "FD", {"lamda": 1.0}, {"lam": 1.0, "target": "raw"}),
    # PFLlib's FedGen with -lf True shares the head only (fedloom's, HtFLlib's lite FedGen); set to fedloom's
    # defaults (HtFLlib total.sh): noise 32, hidden 512, generator Adam lr 0.1, 100 generator steps per round
    _m("fedgen", "FedGen", {"localize_feature_extractor": True, "noise_dim": 32, "hidden_dim": 512,
                            "generator_learning_rate": 0.1, "server_epochs": 100},
       {"noise_dim": 32, "hidden_dim": 512, "generator_lr": 0.1, "server_epochs": 100, "gen_batch_size": 10},
       known_gap="PFLlib draws generator labels from every client's counts known from the start (drop_last "
                 "batches); fedloom from the uploaded counts, in round 1 each client from its own"),
    _m("lg-fedavg", "LG-FedAvg"),
    # PFLlib's argparse alpha 1, beta 0 would switch mutual learning off; its KLDivLoss() is the mean over
    # classes too and its targets are not detached: fedloom's HtFLlib switches reproduce that
    _m("fml", "FML", {"alpha": 0.5, "beta": 0.5},
       {"alpha": 0.5, "beta": 0.5, "detach_targets": False, "kl": "mean", "clip_norm": 10.0}),
    # the mentee is the same CNN (one architecture), trained at -mlr 0.005 = the run's lr
    _m("fedkd", "FedKD", {"T_start": 0.95, "T_end": 0.98, "mentee_learning_rate": 0.005},
       {"t_start": 0.95, "t_end": 0.98, "kl": "mean", "clip_norm": 10.0}),
    # -slr default 1.0; fedloom's server_lr 0.01 is HtFLlib's: PFLlib set to it (one pass, batch -lbs 10)
    _m("fedgh", "FedGH", {"server_learning_rate": 0.01},
       {"server_epochs": 1, "server_lr": 0.01, "server_batch_size": 10},
       known_gap="PFLlib's server head is client 0's head module itself (self.head = clients[0].model.head), "
                 "so each round it starts from client 0's locally trained head; fedloom's persists"),
    # --- landed today (docs/algorithms.md, "The last five PFLlib methods") ---
    # PFLlib's strategy 1 = the least similar model ("lowest"); pfllib_compat: its layer-pair similarity and
    # scoring each client with the middleware model it trained last (PFLlib evaluates before assigning)
    _m("fedcross", "FedCross", {"fedcross_alpha": 0.99, "collaberative_model_select_strategy": 1,
                                "first_stage_bound": 0},
       {"alpha": 0.99, "strategy": "lowest", "first_stage_bound": 0, "models": 0, "pfllib_compat": True}),
    _m("pfl-da", "PFL-DA", {"lamda": 1.0}, {"lamda": 1.0}),
    # PFLlib's server step is lr * lamda = 0.005 * 1
    # PFLlib's heads have no bias and are drawn per client: fedloom's compat
    _m("fedgc", "FedGC", {"lamda": 1.0}, {"server_lr": 0.005, "pfllib_compat": True},
       known_gap="PFLlib maps a test label the client lacks to its local class 0, which counts as correct when "
                 "the client predicts its lowest class (fedgc.py's docstring; a predictor cannot reproduce it)"),
    # PFLlib's regularizer is built from state_dict() tensors (detached): no gradient, its FedMTL trains as Local
    _m("fedmtl", "FedMTL", {"itk": 4000}, {"lambda1": 1e-4, "lambda2": 1e-4, "pfllib_compat": True}),
    # main.py replaces the CNN's fc by nn.Identity (no head, prototypes classify): fedloom's body output
    # PFLlib stacks its prototype dicts in insertion order and scores with the padded dict: fedloom's compat
    _m("fedpcl", "FedPCL", {"tau": 1.0}, {"tau": 1.0, "pfllib_compat": True},
       known_gap="round 0: PFLlib scores 0 before prototypes exist, fedloom scores with the model's head"),
]}

# the order the brief asks for when the budget cannot cover every method
PRIORITY = ["gpfl", "fedavg", "ditto", "fedprox", "fedrep", "fedala", "feddbe", "fedper", "fedrod", "local",
            "fedbabu", "fedcp", "apfl", "per-fedavg", "fedfomo", "fedamp", "fedphp", "scaffold", "moon",
            "feddyn", "apple", "pfedme", "fedcac", "fedbn", "fedlc", "fedntd", "fedpac", "fedas", "fedproto",
            "fd", "fedgen", "lg-fedavg", "fml", "fedkd", "fedgh", "fedcross", "pfl-da", "fedgc", "fedmtl",
            "fedpcl"]

