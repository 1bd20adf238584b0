"""The 'file' partition: clients read from ``--partition-file FILE`` (fedloom/data/partition_io.py).

build_federated_data reads the file instead of calling a partitioner; this entry only gives the name a place
in the registry (``fedloom list``, summaries) and refuses to run without the file.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from fedloom.data.base import PARTITIONERS, PartitionSpec
from fedloom.errors import ConfigError


@PARTITIONERS.register("file")
def file_partition(labels: np.ndarray, spec: PartitionSpec, rng: np.random.Generator,
                   natural_ids: Optional[np.ndarray]) -> list[np.ndarray]:
    """Clients from --partition-file FILE (fedloom's clients.npz/.json, or a PFLlib folder)."""
    raise ConfigError("the 'file' partition reads its clients from --partition-file FILE; give that flag")


file_partition.params = ()  # type: ignore[attr-defined]
