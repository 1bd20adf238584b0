"""Round patterns, registered by name (``--pattern star|gossip``): how one round moves information.

``star`` is federated learning with a server (sample → train → server step); ``cyclic`` trains the cohort one
client after another with a server step after each (cyclical weight transfer); ``gossip`` has no server: every
node trains, then averages with its neighbours on a ``--topology`` mixing matrix (D-PSGD, CHOCO-SGD, DCD-PSGD,
GossipFL); ``blockdfl`` elects providers, aggregators and verifiers by stake and commits one voted global update
per round (BlockDFL). A pattern is a
class with ``start(exp)`` (the round-0 state and evaluation) and ``step(exp, server, round_, totals)``; the run
loop, checkpoints and resume are the same for every pattern.
"""

from fedloom.patterns.base import PATTERNS, RoundPattern
from fedloom.patterns import bandwidth, blockdfl, cyclic, gossip, star  # noqa: F401  (registration)

__all__ = ["PATTERNS", "RoundPattern"]
