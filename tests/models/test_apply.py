"""apply_with: the same outputs and gradients as torch.func.functional_call, the template left untouched."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from fedloom.models.apply import apply_with, slots_of


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4)
        self.out = nn.Linear(4, 7, bias=False)
        self.out.weight = self.emb.weight  # tied, as GPT-2's embedding and LM head
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(self.emb(x)))


def _params(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(p.shape, generator=g).requires_grad_() for n, p in model.named_parameters()}


def test_same_outputs_and_grads_as_functional_call():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 2))
    params, x = _params(model), torch.randn(4, 5)
    ours = apply_with(model, params, (x,))
    theirs = functional_call(model, params, (x,), strict=False)
    assert torch.equal(ours, theirs)
    g1 = torch.autograd.grad(ours.sum(), list(params.values()))
    g2 = torch.autograd.grad(theirs.sum(), list(params.values()))
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


def test_template_untouched_and_restored_after_an_error():
    model = nn.Sequential(nn.Linear(5, 3))
    before = {n: p for n, p in model.named_parameters()}
    params = _params(model)
    with pytest.raises(RuntimeError):
        apply_with(model, params, (torch.randn(4, 6),))  # wrong width: the forward raises
    assert all(p is before[n] for n, p in model.named_parameters())
    apply_with(model, params, (torch.randn(4, 5),))
    assert all(p is before[n] for n, p in model.named_parameters())


def test_tied_weights_follow_one_name_and_missing_names_stay_the_models():
    model = Tied().eval()
    x = torch.tensor([[1, 2, 3]]).reshape(3)
    weight = torch.randn(7, 4)
    ours = apply_with(model, {"emb.weight": weight}, (x,))
    theirs = functional_call(model, {"emb.weight": weight}, (x,), strict=False)
    assert torch.equal(ours, theirs)
    assert slots_of(model).targets["emb.weight"] == slots_of(model).targets["out.weight"]


def test_buffers_are_swapped_too():
    model = Tied().eval()
    x = torch.tensor([1, 2, 3])
    stats = {"norm.running_mean": torch.full((4,), 2.0)}
    assert torch.equal(apply_with(model, stats, (x,)), functional_call(model, stats, (x,), strict=False))
    assert torch.equal(model.norm.running_mean, torch.zeros(4))


def test_names_it_cannot_serve_go_to_functional_call():
    model = Tied().eval()
    x = torch.tensor([1, 2, 3])
    both = {"emb.weight": torch.randn(7, 4)}
    both["out.weight"] = both["emb.weight"]  # both aliases, same tensor: functional_call accepts it
    assert not slots_of(model).covers(both)
    assert torch.equal(apply_with(model, both, (x,)), functional_call(model, both, (x,), strict=False))
    with pytest.raises(Exception):  # an unknown name: functional_call's own error
        apply_with(model, {"nope.weight": torch.randn(2)}, (x,))
