"""How algorithm-specific tensors are named next to the model's parameters: the one convention.

Methods that train more than the model in the same local-SGD steps put every tensor they train or carry in
one flat ``name -> tensor`` dict. Its entries are named as follows:

* the model's own parameters keep their module names (``body.*``, ``head.*``, as ``model.named_parameters()``);
  a module name never contains ``/``, so ``ctx.apply`` and ``tree_select(params, is_body)`` see the model only;
* every other tensor is named ``<tag>/<name>``: ``tagged(tag, tree)`` for a module or model copy (its dotted
  parameter names after the slash: FedCP's ``cpn/fc.weight``, GPFL's ``cov/gamma.ln.bias``, pFedMe's
  ``local/body.0.weight``, FedAPEN's ``private/...`` and ``shared/...``, FedRoD's ``phead/...``, APFL's
  ``personal/...``), ``tag_name(tag, name)`` for a single tensor (APFL's ``apfl/alpha``, APPLE's ``apple/p``,
  GPFL's ``gce/weight``, FedDBE's ``feddbe/prbm``);
* ``model_part`` keeps the model's entries, ``untagged(tag, flat)`` gives a tagged tree back under its own
  names, ``is_model_name`` tells the two kinds apart (``trainable=is_model_name`` trains the model only).

The tag is a short lowercase word naming the module (or the algorithm, for a single tensor). The convention
is internal to a client update: the keys of states, uploads, broadcasts and Predictor trees (what checkpoints,
wire bytes and metrics see) are plain words chosen by each algorithm and are not renamed by it.
"""

from __future__ import annotations

from fedloom.algorithms.tree import Params

SEPARATOR = "/"


def tag_name(tag: str, name: str) -> str:
    """The flat-dict name of one algorithm-specific tensor (or of entry ``name`` of module ``tag``)."""
    return f"{tag}{SEPARATOR}{name}"


def tagged(tag: str, params: Params) -> Params:
    """``params`` renamed ``<tag>/<name>``, to train it in the same flat dict as the model."""
    return {tag_name(tag, name): value for name, value in params.items()}


def untagged(tag: str, params: Params) -> Params:
    """The entries of ``params`` tagged ``tag``, under their own names again (the inverse of ``tagged``)."""
    prefix = tag_name(tag, "")
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def is_model_name(name: str) -> bool:
    return SEPARATOR not in name


def model_part(params: Params) -> Params:
    return {name: value for name, value in params.items() if is_model_name(name)}
