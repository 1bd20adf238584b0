"""Run PFLlib's own client/server code (Zhang et al., "PFLlib", JMLR 2025) for one method and seed; write its curve.

    python benchmarks/parity/pfllib_side.py --pfllib CHECKOUT --data DATASET_DIR --method gpfl --rounds 10 \
        --seed 1 --out curve.json

Nothing of PFLlib is copied or edited: its ``system/`` folder is put on ``sys.path`` and the server class that
``system/main.py`` builds for ``-algo NAME`` is imported by itself. main.py itself is not imported (it imports
torchvision, which fails beside the CPU torch build here, cvxpy and calmsize at module level); instead
- its argparse block is read from main.py's source and executed, so every default is PFLlib's own;
- the model is built as main.py does for ``-m CNN`` on an MNIST-like dataset (``FedAvgCNN(1, 10, 1024)``), with
  main.py's head split (``BaseHeadSplit``) for exactly the algorithms whose branch in main.py has it (read from
  its source); FedBN gets the harness's ``FedAvgCNNBN`` instead (fedloom's cnn-bn; PFLlib has no BN CNN here);
- modules the CNN path never uses but that PFLlib imports at module level (``h5py`` in serverbase/result_utils,
  ``torchvision``/``cvxpy``/``calmsize`` elsewhere) are replaced by empty stub modules in ``sys.modules`` when they
  are not installed. A method that really calls one of them fails loudly (AttributeError on the stub).

Evaluation: PFLlib's ``train()`` evaluates at the top of every iteration i = 0..R, after ``send_models`` and before
the clients train, i.e. the model after i aggregations: PFLlib's evaluation i is fedloom's round i. The harness
records every ``evaluate`` call (accuracy = Σcorrect/Σsamples and PFLlib's train loss, as its ``evaluate``
computes them) plus the per-client (correct, samples) of the ``test_metrics*`` calls made during it, and stops
the loop right after evaluation R (PFLlib would train one more, unevaluated round).

Seeds: main.py seeds torch with 0 once per process and every PFLlib client calls ``torch.manual_seed(0)`` in its
constructor. For seed s the harness seeds ``random``, NumPy and torch with s before building the model and
reseeds torch with s after the server (and its clients) are built, so the model initialisation and the data
order differ between seeds as they do between fedloom seeds.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import random
import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from methods import COMMON_PFLLIB, METHODS  # noqa: E402

STUBBED = ("h5py", "torchvision", "cvxpy", "calmsize")


class _Done(Exception):
    """Raised after the last wanted evaluation: ends PFLlib's loop without its extra training round."""


def stub_missing_modules() -> list[str]:
    """Empty modules for PFLlib's module-level imports that the CNN path never calls."""
    stubbed = []
    for name in STUBBED:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any import failure (missing, or broken beside the CPU torch)
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    return stubbed


def pfllib_parser(main_src: str) -> argparse.ArgumentParser:
    """PFLlib's own argparse parser: the ``parser = ...`` .. ``parse_args`` block of main.py, executed."""
    tree = ast.parse(main_src)
    body = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)).body
    lines = [ast.unparse(n) for n in body if "parser" in ast.unparse(n) and "parse_args" not in ast.unparse(n)]
    scope: dict[str, Any] = {"argparse": argparse}
    exec("\n".join(lines), scope)  # noqa: S102 - PFLlib's own parser definition, run as PFLlib runs it
    return scope["parser"]


def server_class_of(main_src: str, algo: str) -> tuple[str, str, bool]:
    """(module, class, head split) main.py uses for ``-algo algo``."""
    block = re.search(r'args\.algorithm == ["\']' + re.escape(algo) + r'["\']:(.*?)(?=\n\s*elif |\n\s*else:)',
                      main_src, re.S)
    if block is None:
        raise SystemExit(f"PFLlib's main.py has no algorithm {algo!r}")
    cls = re.search(r"server = (\w+)\(args, i\)", block.group(1)).group(1)
    module = re.search(r"from (flcore\.servers\.\w+) import " + cls + r"\b", main_src).group(1)
    return module, cls, "BaseHeadSplit" in block.group(1)


def drops_head(main_src: str, algo: str) -> bool:
    """Whether main.py's branch for ``algo`` replaces the CNN's fc by nn.Identity without a head split
    (FedPCL: the body's features are classified by prototypes)."""
    block = re.search(r'args\.algorithm == ["\']' + re.escape(algo) + r'["\']:(.*?)(?=\n\s*elif |\n\s*else:)',
                      main_src, re.S)
    return block is not None and "nn.Identity()" in block.group(1) and "BaseHeadSplit" not in block.group(1)


def build_args(main_src: str, method: str, dataset: str, rounds: int, save_dir: str) -> argparse.Namespace:
    spec = METHODS[method]
    args = pfllib_parser(main_src).parse_args([])
    overrides = {**COMMON_PFLLIB, **spec.pfllib_args, "algorithm": spec.pfllib, "dataset": dataset,
                 "global_rounds": rounds, "save_folder_name": save_dir, "times": 1}
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise SystemExit(f"PFLlib has no argument {key!r}")
        setattr(args, key, value)
    return args


class FedAvgCNNBN(torch.nn.Module):
    """The harness's model for FedBN on PFLlib's side (PFLlib has no BatchNorm CNN for 1x28x28 inputs): PFLlib's
    FedAvgCNN with a BatchNorm after each convolution, layer for layer fedloom's ``--model cnn-bn``
    (conv5x5(32)-bn1-ReLU-pool, conv5x5(64)-bn2-ReLU-pool, fc1(1024->512)-ReLU, fc(512->C)). Its BN parameters
    are named ``bn1.*``/``bn2.*``, so PFLlib's FedBN rule ("bn" in the parameter name) keeps them local; BN uses
    the batch's statistics in evaluation too (``track_running_stats=False``), as fedloom's cnn-bn does."""

    def __init__(self, in_features: int = 1, num_classes: int = 10, dim: int = 1024) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(in_features, 32, 5), nn.BatchNorm2d(32, track_running_stats=False)
        self.conv2, self.bn2 = nn.Conv2d(32, 64, 5), nn.BatchNorm2d(64, track_running_stats=False)
        self.fc1, self.fc = nn.Linear(dim, 512), nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional
        x = f.max_pool2d(f.relu(self.bn1(self.conv1(x))), 2)
        x = f.max_pool2d(f.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(f.relu(self.fc1(torch.flatten(x, 1))))


def build_model(args: argparse.Namespace, head_split: bool, kind: str = "cnn") -> torch.nn.Module:
    """main.py's model for -m CNN on an MNIST-like dataset (``kind`` "cnn"), or the harness's FedAvgCNNBN
    ("cnn-bn"), split into body + head where main.py splits it."""
    import copy

    from flcore.trainmodel.models import BaseHeadSplit, FedAvgCNN
    if kind == "cnn-bn":
        model: torch.nn.Module = FedAvgCNNBN(1, args.num_classes, 1024)
    else:
        model = FedAvgCNN(in_features=1, num_classes=args.num_classes, dim=1024)
    if head_split:
        args.head = copy.deepcopy(model.fc)
        model.fc = torch.nn.Identity()
        model = BaseHeadSplit(model, args.head)
    return model


class Recorder:
    """Per evaluation: accuracy, train loss (PFLlib's), per-client accuracy; stops after ``last`` evaluations."""

    def __init__(self, server: Any, last: int, flush: Any = None) -> None:
        self.server, self.last, self.rows, self.pending, self.flush = server, last, [], [], flush
        self.t0 = time.perf_counter()

    def wrap_clients(self) -> None:
        classes = {type(c) for c in self.server.clients}
        for cls in classes:
            for name in [n for n in dir(cls) if n.startswith("test_metrics")]:
                setattr(cls, name, self._client_hook(getattr(cls, name)))

    def _client_hook(self, fn: Any) -> Any:
        def hooked(client: Any, *a: Any, **k: Any) -> Any:
            out = fn(client, *a, **k)
            self.pending.append((client.id, float(out[0]), int(out[1])))
            return out
        return hooked

    def after_eval(self, acc: float, loss: float | None) -> None:
        per_client = {cid: c / max(n, 1) for cid, c, n in self.pending}
        self.rows.append({"round": len(self.rows), "accuracy": acc, "train_loss": loss,
                          "client_accuracy": [per_client.get(i) for i in sorted(per_client)],
                          "seconds": round(time.perf_counter() - self.t0, 2)})
        print(json.dumps({k: v for k, v in self.rows[-1].items() if k != "client_accuracy"}), flush=True)
        if self.flush is not None:
            self.flush(self.rows)
        if len(self.rows) > self.last:
            raise _Done


ACC_LISTS, LOSS_LISTS = ("rs_test_acc_per", "rs_test_acc"), ("rs_train_loss_per", "rs_train_loss")


def wrap_evaluation(server: Any, rec: Recorder, name: str) -> None:
    """Hook the server's scored evaluation (``evaluate``; Ditto and pFedMe ``evaluate_personalized``, Per-FedAvg
    ``evaluate_one_step``): after it ran, record what it appended to PFLlib's accuracy and loss lists (the
    ``_per`` lists where it fills those) and the per-client results of the client calls it made."""
    fn = getattr(server, name)

    def grown(names: tuple[str, ...], before: dict[str, int]) -> float | None:
        for n in names:
            values = getattr(server, n, None)
            if values is not None and len(values) > before[n]:
                return float(values[-1])
        return None

    def hooked(*a: Any, **k: Any) -> Any:
        rec.pending = []  # drop client results of an earlier, unscored evaluation (Ditto's global one)
        before = {n: len(getattr(server, n, []) or []) for n in ACC_LISTS + LOSS_LISTS}
        out = fn(*a, **k)
        rec.after_eval(grown(ACC_LISTS, before), grown(LOSS_LISTS, before))
        return out
    setattr(server, name, hooked)


def memoize_data_reads() -> None:
    """PFLlib re-reads and decompresses a client's npz file on every DataLoader it builds (3 per client per
    round); the harness caches each (dataset, client, split) once. The cached list is the same object PFLlib
    would rebuild (a list of (x, y) tensors that nothing mutates), so only the time changes."""
    import utils.data_utils as du
    cache: dict[tuple, Any] = {}
    original = du.read_client_data

    def cached(dataset: str, idx: int, is_train: bool = True, few_shot: int = 0) -> Any:
        key = (dataset, idx, is_train, few_shot)
        if key not in cache:
            cache[key] = original(dataset, idx, is_train, few_shot)
        return cache[key]
    for module in list(sys.modules.values()):
        if getattr(module, "read_client_data", None) is original:
            module.read_client_data = cached


def run(pfllib: Path, data: Path, method: str, rounds: int, seed: int, threads: int, out: Path) -> None:
    torch.set_num_threads(threads)
    system = pfllib / "system"
    main_src = (system / "main.py").read_text()
    stubbed = stub_missing_modules()
    sys.path.insert(0, str(system))
    module, cls, head_split = server_class_of(main_src, METHODS[method].pfllib)
    # PFLlib reads ../dataset/<name>/{train,test}/<i>.npz relative to its working directory
    work = data.parent.parent / "pfllib_cwd"
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    args = build_args(main_src, method, data.name, rounds + METHODS[method].pfllib_rounds_offset,
                      str(work / f"items-{method}-s{seed}"))
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
    args.model = build_model(args, head_split, getattr(METHODS[method], "pfllib_model", "cnn"))
    if drops_head(main_src, METHODS[method].pfllib):
        args.model.fc = torch.nn.Identity()
    server_cls = getattr(importlib.import_module(module), cls)
    memoize_data_reads()
    server = server_cls(args, 0)
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)  # the clients reset torch to 0
    result = {"implementation": "pfllib", "method": method, "pfllib_algorithm": METHODS[method].pfllib,
              "seed": seed, "rounds": rounds, "server_class": f"{module}.{cls}", "head_split": head_split,
              "stubbed_modules": stubbed, "pfllib_args": {k: v for k, v in vars(args).items()
                                                          if isinstance(v, (int, float, str, bool))}}

    def flush(rows: list) -> None:
        out.write_text(json.dumps({**result, "curve": rows}))
    rec = Recorder(server, rounds, flush)
    rec.wrap_clients()
    wrap_evaluation(server, rec, METHODS[method].pfllib_eval)
    try:
        server.train()
    except _Done:
        pass
    out.write_text(json.dumps({**result, "curve": rec.rows, "complete": True}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pfllib", type=Path, required=True, help="PFLlib checkout (holding system/main.py)")
    p.add_argument("--data", type=Path, required=True, help="PFLlib dataset folder (DIR/dataset/NAME)")
    p.add_argument("--method", choices=sorted(METHODS), required=True)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    run(a.pfllib.resolve(), a.data.resolve(), a.method, a.rounds, a.seed, a.threads, a.out.resolve())


if __name__ == "__main__":
    main()
