"""Helpers over parameter trees: dicts (possibly nested) whose leaves are tensors.

Algorithms express their maths with these instead of looping over ``model.parameters()``, which keeps them
independent of module objects and lets a vectorized engine apply the same code to stacked parameters.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import torch

Params = dict[str, torch.Tensor]
Tree = Any  # a tensor, or a Mapping of str -> Tree


def tree_map(fn: Callable[..., torch.Tensor], tree: Tree, *rest: Tree) -> Tree:
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    return fn(tree, *rest)


def tree_leaves(tree: Tree) -> list[torch.Tensor]:
    if tree is None:
        return []
    if isinstance(tree, Mapping):
        return [leaf for v in tree.values() for leaf in tree_leaves(v)]
    return [tree]


def tree_add(a: Tree, b: Tree) -> Tree:
    return tree_map(torch.add, a, b)


def tree_sub(a: Tree, b: Tree) -> Tree:
    return tree_map(torch.sub, a, b)


def tree_scale(a: Tree, factor: float) -> Tree:
    return tree_map(lambda x: x * factor, a)


def tree_clone(a: Tree) -> Tree:
    return tree_map(lambda x: x.detach().clone(), a)


def tree_zeros_like(a: Tree) -> Tree:
    return tree_map(torch.zeros_like, a)


def tree_sq_norm(a: Tree) -> torch.Tensor:
    leaves = tree_leaves(a)
    return sum((leaf.pow(2).sum() for leaf in leaves), torch.zeros(()))


def tree_sq_dist(a: Tree, b: Tree) -> torch.Tensor:
    """Σ_name ‖a[name] − b[name]‖² over all leaves, matched by name (a leaf's path of keys), never by position:
    states, broadcasts and training dicts may list the same tensors in other orders. Summed in ``a``'s order,
    differentiable in a and b. This is the one squared distance of the code base (FedProx, Ditto, pFedMe,
    FedAMP, FedFomo, the gossip consensus distance).

    Raises ValueError when the two trees do not name the same tensors."""
    left, right = _leaves_by_path(a), _leaves_by_path(b)
    if left.keys() != right.keys():
        only_a = sorted(".".join(p) for p in left.keys() - right.keys())
        only_b = sorted(".".join(p) for p in right.keys() - left.keys())
        raise ValueError(f"tree_sq_dist: the trees name different tensors (only in the first: {only_a or '-'}; "
                         f"only in the second: {only_b or '-'})")
    return sum(((left[path] - right[path]).pow(2).sum() for path in left), torch.zeros((), device=_device_of(a)))


def _leaves_by_path(tree: Tree, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], torch.Tensor]:
    """The leaves of ``tree`` keyed by their path of keys, in the tree's own order."""
    if tree is None:
        return {}
    if isinstance(tree, Mapping):
        out: dict[tuple[str, ...], torch.Tensor] = {}
        for key, value in tree.items():
            out.update(_leaves_by_path(value, (*path, key)))
        return out
    return {path: tree}


def tree_bytes(tree: Optional[Tree]) -> int:
    """Bytes needed to transmit the tree's tensors as stored (numel x element size)."""
    return sum(leaf.numel() * leaf.element_size() for leaf in tree_leaves(tree))


def tree_select(params: Params, keep: Callable[[str], bool]) -> Params:
    """The sub-dict of parameters whose names satisfy ``keep`` (e.g. models.base.is_head)."""
    return {name: value for name, value in params.items() if keep(name)}


def tree_allfinite(tree: Tree) -> bool:
    return all(bool(torch.isfinite(leaf).all()) for leaf in tree_leaves(tree))


def _device_of(tree: Tree) -> torch.device:
    leaves = tree_leaves(tree)
    return leaves[0].device if leaves else torch.device("cpu")


def tree_stack(trees: list[Tree]) -> Tree:
    """Stack same-shaped trees along a new leading (client) axis."""
    first = trees[0]
    if isinstance(first, Mapping):
        return {k: tree_stack([t[k] for t in trees]) for k in first}
    return torch.stack(trees)


def tree_index(tree: Tree, position: int) -> Tree:
    """The slice of a stacked tree at ``position``, as an independent copy (no view of the whole stack)."""
    return tree_map(lambda leaf: leaf[position].clone(), tree)
