"""FedCAC's mechanism, PFLlib's own functions against fedloom's, on the same models: does the gap in the curves
come from the algorithm or from the training around it? (issue 28, docs/results/pfllib-parity.md)

Both sides start from one FedAvgCNN and see the same "local training" (a seeded perturbation of every parameter,
the same for both) for ``--rounds`` rounds; PFLlib's side runs clientCAC.evaluate_critical_parameter,
FedCAC.get_customized_global_models (from its round counter 1 on, as its send_models does) and
clientCAC.set_parameters; fedloom's the critical masks, the server step (pfllib_compat) and the start model.
Printed per round: the largest difference between the two sides' start models and the fraction of mask entries
that agree.

    python benchmarks/parity/check_fedcac.py --pfllib /tmp/pfllib --clients 6 --rounds 4
"""

from __future__ import annotations

import argparse
import copy
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from pfllib_side import stub_missing_modules  # noqa: E402


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def pfllib_client(init: torch.nn.Module, index: int) -> types.SimpleNamespace:
    """The attributes of a clientCAC that its mask and set_parameters functions read."""
    return types.SimpleNamespace(model=copy.deepcopy(init), customized_model=copy.deepcopy(init), local_mask=None,
                                 global_mask=None, critical_parameter=None, device="cpu", id=index,
                                 args=types.SimpleNamespace(device="cpu"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pfllib", type=Path, required=True, help="PFLlib checkout (system/ inside)")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--beta", type=int, default=170)
    a = p.parse_args()
    stub_missing_modules()
    sys.path.insert(0, str(a.pfllib / "system"))
    from flcore.clients.clientcac import clientCAC
    from flcore.servers.servercac import FedCAC as PFLlibServer
    from flcore.trainmodel.models import FedAvgCNN

    from fedloom.algorithms.fedcac import FedCAC, critical_mask
    from fedloom.algorithms.uploads import UploadAccumulator

    torch.manual_seed(0)
    init = FedAvgCNN(1, 10, 1024)
    names = list(params(init))
    clients = [pfllib_client(init, i) for i in range(a.clients)]
    server_p = types.SimpleNamespace(selected_clients=clients, device="cpu", epoch=0,
                                     args=types.SimpleNamespace(beta=a.beta, device="cpu"))
    algorithm = FedCAC(tau=a.tau, beta=a.beta, pfllib_compat=True)
    result = algorithm.init_server(params(init), types.SimpleNamespace(num_clients=a.clients))
    server_f, broadcast = result.state, result.broadcast
    states = {i: algorithm.init_client_state(params(init), i) for i in range(a.clients)}
    weights = [float(w) for w in torch.randint(10, 100, (a.clients,))]
    for round_ in range(a.rounds):
        server_p.epoch = round_
        items, agree = [], 1.0
        for i, client in enumerate(clients):
            start = algorithm.start_model(broadcast.for_client(i), states[i])
            before = copy.deepcopy(client.model)
            noise = torch.Generator().manual_seed(1000 * round_ + i)
            with torch.no_grad():  # the same "training" on both sides: PFLlib's model, fedloom's start + its delta
                deltas = {k: torch.randn(v.shape, generator=noise) * 0.01 for k, v in client.model.named_parameters()}
                for k, v in client.model.named_parameters():
                    v.add_(deltas[k])
            trained = {k: start[k] + deltas[k] for k in names}
            client.critical_parameter, client.global_mask, client.local_mask = \
                clientCAC.evaluate_critical_parameter(client, before, client.model, a.tau)
            mask = {k: critical_mask(((trained[k] - start[k]) * trained[k]).abs(), a.tau) for k in names}
            agree = min([agree] + [(mask[k] == client.local_mask[j].bool()).float().mean().item()
                                   for j, k in enumerate(names)])
            states[i] = {"critical": mask}
            items.append((i, {"params": trained, "critical": mask}, weights[i]))
        total = sum(weights)
        global_model = copy.deepcopy(init)  # PFLlib's aggregate_parameters: the sample-weighted mean
        with torch.no_grad():
            for k, v in global_model.named_parameters():
                v.copy_(sum(weights[i] / total * dict(c.model.named_parameters())[k] for i, c in enumerate(clients)))
        if server_p.epoch != 0:  # PFLlib's send_models
            PFLlibServer.get_customized_global_models(server_p)
        for client in clients:
            clientCAC.set_parameters(client, global_model)
        accumulator = UploadAccumulator(keep_all=True)
        for i, upload, w in items:
            accumulator.add(i, upload, w)
        result = algorithm.server_update(server_f, accumulator.finish())
        server_f, broadcast = result.state, result.broadcast
        worst = max((algorithm.start_model(broadcast.for_client(i), states[i])[k] - params(c.model)[k]).abs().max()
                    .item() for i, c in enumerate(clients) for k in names)
        print(f"round {round_ + 1}: max |fedloom start model - PFLlib model| = {worst:.3g}; masks agree on "
              f"{agree:.4%} of entries (worst tensor)")


if __name__ == "__main__":
    main()
