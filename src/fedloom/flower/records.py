"""fedloom messages as Flower records, in their wire form.

A tree (broadcast params, a personal download, a client state) travels as one ``ArrayRecord`` of its tensors
(keys are the tree's paths) plus its shape, a small pickled skeleton, in a ``ConfigRecord``. A compact wire form
(``pipeline.wire.Compact``: top-k's indices and values, FedKSeed's seeds and scalars) travels as its arrays alone,
with the decoder (a module-level function and its arguments, never a closure) beside them in the ConfigRecord;
an upload that passed through the upload pipeline's codecs travels as the codec payload and is decoded by the
receiver's own pipeline. Bytes on the wire are the ``ArrayRecord``s' array bytes (``wire_bytes``), counted from
the records that arrived, never declared; the skeleton and metadata are reported separately
(``meta_bytes``).

Design follows the Flower Message API (Beutel et al., "Flower: A Friendly Federated Learning Research Framework",
2020; flwr 1.42 ``flwr.app``): a Message carries one RecordDict of named ArrayRecords, ConfigRecords and
MetricRecords.
"""

from __future__ import annotations

import pickle
from typing import Any, Optional

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

import fedloom.algorithms  # noqa: F401  (first: the algorithms package imports pipeline.wire itself)
from fedloom.pipeline.wire import Compact


class _Slot:
    """Where a tensor sat in a skeleton (pickled in its place)."""

    def __init__(self, key: str) -> None:
        self.key = key


def split_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """(skeleton, tensors): ``obj`` with every tensor replaced by a slot named after its path."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "value"
        return _Slot(key), {key: obj}
    if isinstance(obj, dict):
        skeleton, tensors = {}, {}
        for name, value in obj.items():
            skeleton[name], found = split_tensors(value, f"{prefix}/{name}" if prefix else str(name))
            tensors.update(found)
        return skeleton, tensors
    if isinstance(obj, (list, tuple)):
        parts = [split_tensors(v, f"{prefix}/{i}" if prefix else str(i)) for i, v in enumerate(obj)]
        tensors = {k: t for _, found in parts for k, t in found.items()}
        return type(obj)(s for s, _ in parts), tensors
    return obj, {}


def fill_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_tensors`."""
    if isinstance(skeleton, _Slot):
        return tensors[skeleton.key]
    if isinstance(skeleton, dict):
        return {name: fill_tensors(value, tensors) for name, value in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(fill_tensors(v, tensors) for v in skeleton)
    return skeleton


def to_arrays(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    # keys are sorted so that a record's bytes never depend on dict order
    return ArrayRecord({k: Array(tensors[k].detach().cpu().contiguous().numpy()) for k in sorted(tensors)})


def from_arrays(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(record[k].numpy().copy()) for k in record.keys()}


def arrays_nbytes(record: ArrayRecord) -> int:
    """Bytes of the arrays' elements as they arrived (fedloom's ``payload_bytes`` of the same arrays)."""
    return sum(int(record[k].numpy().nbytes) for k in record.keys())


def serialized_nbytes(record: ArrayRecord) -> int:
    """Bytes of the arrays as Flower serializes them (each element buffer with its .npy header)."""
    return sum(len(record[k].data) for k in record.keys())


# ------------------------------------------------------------------------------------------------ messages
def put_tree(content: RecordDict, name: str, tree: Any) -> None:
    """Store any tree (or None) under ``name``: ``name`` (arrays) and ``name.meta`` (skeleton)."""
    skeleton, tensors = split_tensors(tree)
    content.array_records[name] = to_arrays(tensors)
    content.config_records[f"{name}.meta"] = ConfigRecord({"skeleton": pickle.dumps(skeleton)})


def get_tree(content: RecordDict, name: str) -> Any:
    skeleton = pickle.loads(content.config_records[f"{name}.meta"]["skeleton"])
    return fill_tensors(skeleton, from_arrays(content.array_records[name]))


def put_compact(content: RecordDict, name: str, message: Compact) -> None:
    """A compact wire form: its arrays alone, and its decoder (a picklable function) as metadata."""
    content.array_records[name] = to_arrays(message.arrays)
    content.config_records[f"{name}.meta"] = ConfigRecord({"decoder": pickle.dumps(message.decode_fn)})


def get_compact(content: RecordDict, name: str) -> Compact:
    decoder = pickle.loads(content.config_records[f"{name}.meta"]["decoder"])
    return Compact(from_arrays(content.array_records[name]), decoder)


def put_value(content: RecordDict, name: str, value: Any) -> None:
    """A wire-form message of either kind (Compact or tree) under ``name``."""
    if isinstance(value, Compact):
        put_compact(content, name, value)
    else:
        put_tree(content, name, value)


def get_value(content: RecordDict, name: str) -> Any:
    if "decoder" in content.config_records[f"{name}.meta"]:
        return get_compact(content, name)
    return get_tree(content, name)


def put_object(content: RecordDict, name: str, value: Any) -> None:
    """Control data with no tensors (client lists, metrics, errors): pickled into one ConfigRecord."""
    content.config_records[name] = ConfigRecord({"pickle": pickle.dumps(value)})


def get_object(content: RecordDict, name: str, default: Optional[Any] = None) -> Any:
    if name not in content.config_records:
        return default
    return pickle.loads(content.config_records[name]["pickle"])


def wire_bytes(content: RecordDict, prefix: str = "") -> int:
    """Array bytes of every ArrayRecord whose name starts with ``prefix``."""
    return sum(arrays_nbytes(r) for n, r in content.array_records.items() if n.startswith(prefix))


def record_bytes(content: RecordDict) -> int:
    """Serialized bytes of every ArrayRecord (element buffers plus their .npy headers)."""
    return sum(serialized_nbytes(r) for r in content.array_records.values())


def meta_bytes(content: RecordDict) -> int:
    """Bytes of the ConfigRecords (skeletons, decoders, control data): what the wire form adds around arrays."""
    total = 0
    for record in content.config_records.values():
        for value in record.values():
            total += len(value) if isinstance(value, (bytes, str)) else 8
    return total
