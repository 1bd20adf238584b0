"""The attack seam: a threat model (malicious ids fixed by the seed, optional exact per-round attacker counts)
and attacks registered by name (``--attack badnets --attack.fraction 0.2``), acting on a malicious client's
batches (data level), on its upload (update level), or on the server from the round's benign uploads
(omniscient). Defenses are aggregators (fedloom.pipeline.aggregators, fedloom.pipeline.defenses).
See docs/trust-attacks.md."""

from fedloom.pipeline.attacks.base import (ATTACKS, POISONED_SPLIT, THREAT_NAMESPACE, THREATS, Attack, BatchPoison,
                                           ExactSampler, PoisonContext, PoisonedTestView, ThreatModel)
from fedloom.pipeline.attacks.data import DBA, BadNets, LabelFlip
from fedloom.pipeline.attacks.omniscient import ALIE, IPM, Colluding, MinMax, MinSum, alie_z
from fedloom.pipeline.attacks.update import GaussianAttack, Scaling, SignFlip, scale_and_bound

__all__ = ["ATTACKS", "POISONED_SPLIT", "THREATS", "THREAT_NAMESPACE", "Attack", "BatchPoison", "ExactSampler",
           "PoisonContext", "PoisonedTestView", "ThreatModel", "LabelFlip", "BadNets", "DBA", "SignFlip", "Scaling",
           "GaussianAttack", "ALIE", "IPM", "MinMax", "MinSum", "Colluding", "alie_z", "scale_and_bound"]
