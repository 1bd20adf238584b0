"""The algorithm contract: two pure halves over explicit state.

* ``client_update(ctx, broadcast, state) -> ClientResult(upload, state, weight, metrics)``
* ``server_update(server, uploads) -> ServerResult(state, broadcast, metrics)``

plus ``init_server`` (initial server state and first broadcast), ``init_client_state`` and ``eval_params``
(which parameters a client evaluates with). An algorithm never loops over rounds or clients, never owns a
model object and never draws random numbers except through ``ctx.generator(purpose)``; engines decide how the
halves run (a Python loop, a vmapped pack, worker processes).

Algorithms are frozen dataclasses: their fields are the hyperparameters and, at the same time, the schema of
the ``--<name>.<field>`` CLI flags and the ``[<name>]`` table of a config file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from fedloom.algorithms.tree import Params, Tree, tree_bytes, tree_clone
from fedloom.config import check_fields
from fedloom.registry import Registry

if TYPE_CHECKING:
    import torch

    from fedloom.algorithms.uploads import Uploads
    from fedloom.engines.context import ClientContext

ALGORITHMS: Registry[type] = Registry("algorithm")


@dataclass
class Broadcast:
    """What the server sends: ``params`` and ``extra`` go to every sampled client; ``personal`` maps a client id
    to a tree sent only to that client (FedFomo/FedAMP/APPLE-style personalized downloads).

    Engines hand each client ``broadcast.for_client(cid)``, in which ``personal`` is that client's own tree (or
    None), and count its bytes as that client's download.
    """

    params: Params
    extra: dict[str, Tree] = field(default_factory=dict)
    personal: Optional[dict[int, Tree]] = None
    #: The compact form the server actually sends for ``params`` and ``extra`` (a ``pipeline.wire.Compact``,
    #: e.g. FedKSeed's K accumulated scalars from which every client rebuilds the model); None: the dense trees.
    wire: Optional[Any] = None

    def for_client(self, client_id: int) -> "Broadcast":
        if self.personal is None:
            return self
        return Broadcast(self.params, self.extra, self.personal.get(client_id), self.wire)

    def nbytes(self, client_id: int) -> int:
        """Bytes client ``client_id`` downloads: the shared part (its wire form when declared) plus its own
        personal tree."""
        own = None if self.personal is None else self.personal.get(client_id)
        shared = self.wire.nbytes() if self.wire is not None else tree_bytes(self.params) + tree_bytes(self.extra)
        return shared + tree_bytes(own)


#: ``apply(params, x, part)``: the model template run with an explicit parameter dict (Runtime.apply).
ApplyFn = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class Predictor:
    """What ``eval_params`` returns when a client's predictions are more than the model's forward pass (FedCP's
    policy-split heads, GPFL's conditional valve, FedDBE's representation bias, FedAPEN's ensemble).

    ``fn(apply, tree, x)`` computes the outputs for inputs ``x`` from the tensors in ``tree``, running the model
    (or one of its parts) through ``apply``. Evaluation passes a Predictor wherever it would pass parameters:
    ``Runtime.apply(predictor, x)`` calls it. ``fn`` should be a module-level function or a method of the
    (frozen, stateless) algorithm: everything client-specific belongs in ``tree``.
    """

    tree: Tree
    fn: Callable[[ApplyFn, Tree, "torch.Tensor"], "torch.Tensor"]

    def __call__(self, apply: ApplyFn, x: "torch.Tensor") -> "torch.Tensor":
        return self.fn(apply, self.tree, x)


@dataclass(frozen=True)
class Federation:
    """What a server knows before round 1: clients are numbered 0..num_clients-1 and hold ``train_sizes[i]``
    training samples (a real server learns both when clients register; PFLlib's servers read them at start).
    Servers that keep per-client memory (FedFomo, FedAMP, APPLE) size it with this."""

    num_clients: int
    train_sizes: tuple[int, ...]
    input_shape: tuple[int, ...] = ()  # one sample's shape (a server generating data of its own, VHL, needs it)
    num_classes: int = 0  # the task's label count (0: unknown)
    #: training samples per class over every client (empty: unknown): PFLlib's FedLC server reads every client's
    #: counts before training; a real server learns them only if clients report them
    label_counts: tuple[int, ...] = ()


@dataclass
class ServerState:
    """The server's memory between rounds. ``extra`` holds algorithm-specific tensors (momenta, controls...)."""

    params: Params
    round: int = 0
    extra: dict[str, Tree] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "ServerState":
        return dataclasses.replace(self, **changes)


@dataclass
class ClientResult:
    """The output of one client update. ``upload`` None means the client sends nothing."""

    upload: Optional[Tree]
    state: Optional[Tree]
    weight: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class ServerResult:
    state: ServerState
    broadcast: Broadcast
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Algorithm:
    """Base class; subclasses are frozen dataclasses registered with ``@ALGORITHMS.register(name)``."""

    #: "weighted_mean": the server only needs Σ weight·upload and Σ weight (reducible per pack/worker).
    #: "all": the server needs every upload individually (robust aggregation, FedFomo...).
    aggregation: ClassVar[str] = "weighted_mean"
    #: False if client_update has data-dependent Python control flow a vectorized engine cannot batch.
    vectorizable: ClassVar[bool] = True
    #: True when a client computes the same result without its personal download, which only caches what it
    #: could rebuild from the shared broadcast (VHL's virtual data, regenerated from its seed): a vectorized
    #: pack then leaves it out instead of stacking it (the download's bytes are counted all the same).
    personal_recomputable: ClassVar[bool] = False
    #: True when local training's loss couples the samples of a batch (a contrastive term over the batch, a
    #: per-class batch statistic, draws sized by the batch): one sample's gradient then depends on the others,
    #: so per-sample DP-SGD (--transform sample-dp) cannot bound its influence and refuses the algorithm.
    couples_batch_samples: ClassVar[bool] = False
    #: True when clients exchange model parameters, so every client must have the same architecture; False
    #: for algorithms that run on a federation of mixed architectures (``--model cnn,mlp``).
    shared_architecture: ClassVar[bool] = True
    #: True when the method shares or overwrites the classifier (LG-FedAvg, FedGen, FedGH): every client's head
    #: must have the same tensors; a federation with heterogeneous heads is refused once, by the runtime builder.
    needs_homogeneous_head: ClassVar[bool] = False
    #: True when features φ(x) are compared or mapped across clients (prototypes, feature guides, a shared
    #: projection): every architecture's ``feature_dim`` must be the same; checked once by the runtime builder.
    needs_common_feature_dim: ClassVar[bool] = False
    #: Round patterns the algorithm runs under (fedloom.patterns): "star" (a server) and/or "gossip" (none).
    patterns: ClassVar[tuple[str, ...]] = ("star",)
    #: True when ``client_update`` uploads a ``pipeline.wire.Compact`` message (FedKSeed's seed indices and
    #: scalars): the upload transforms then act on the float arrays of that message, so that it stays compact.
    compact_upload: ClassVar[bool] = False

    def validate(self) -> None:
        """Raise ConfigError for invalid hyperparameters: the ranges the fields declare with ``config.hp``
        (checked by ``config.check_fields``). A subclass with checks that involve several fields calls
        ``super().validate()`` first."""
        check_fields(self)

    def validate_for_model(self, init_params: Params) -> None:
        """Raise ConfigError for options that do not fit the run's model (a layer index past its last tensor, a
        head it needs and the model lacks). Called once by run.build_experiment, as soon as the model exists,
        so that the mistake costs one line and no run folder. Default: nothing to check."""

    def init_server(self, init_params: Params, federation: Federation) -> ServerResult:
        """Initial server state and the first broadcast, for the clients ``federation`` describes (servers that
        keep per-client memory size it with it). Default: broadcast the initial model."""
        state = ServerState(params=tree_clone(init_params))
        return ServerResult(state=state, broadcast=Broadcast(params=state.params))

    def init_client_state(self, init_params: Params, client_id: int) -> Optional[Tree]:
        """State of client ``client_id`` before it has ever trained (called lazily by the engine), from the
        initial parameters of that client's own model (``--model cnn,mlp``: its architecture's). Default: none."""
        return None

    def client_update(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> ClientResult:
        raise NotImplementedError

    def server_update(self, server: ServerState, uploads: "Uploads") -> ServerResult:
        raise NotImplementedError

    # ------------------------------------------------------------ the compact broadcast codec (optional)
    def compact_broadcast(self) -> bool:
        """True when ``Broadcast.wire`` alone lets a client rebuild the whole broadcast (``rebuild_broadcast``):
        transports that send real messages (Flower) then send only the wire form. Default: False (the dense
        trees travel, beside a declared wire form if any)."""
        return False

    def rebuild_broadcast(self, wire: Any, init_params: Params) -> Broadcast:
        """The client half of a compact broadcast: the Broadcast a client works with, from the wire form as it
        arrived (a ``pipeline.wire.Compact``) and what the client already holds (its model's initial parameters,
        which carry the run seed). Only called when ``compact_broadcast()``; the server half is ``Broadcast.wire``."""
        raise NotImplementedError(f"{type(self).__name__} declares no compact broadcast")

    def check_deployable(self) -> None:
        """Raise ConfigError when these options only make sense in simulation, where the server's memory is in
        reach of every client (a transport that sends real messages calls this before training). Default: none."""

    def eval_params(self, ctx: "ClientContext", broadcast: Broadcast, state: Optional[Tree]) -> Params:
        """Parameters client ``ctx.client_id`` is evaluated with (or a Predictor, when its predictions are more
        than the model's forward pass). Default: the broadcast (global) model."""
        return broadcast.params


def hyperparameters(algorithm: Algorithm) -> dict[str, Any]:
    return dataclasses.asdict(algorithm)
