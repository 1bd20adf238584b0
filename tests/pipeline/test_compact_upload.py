"""A compact upload (FedKSeed's seed indices and scalars; Qin et al., ICML 2024) stays compact through the
transforms that act on what is sent (clip and Gaussian noise on the scalars ĝ, as DPZero does: Zhang et al.,
"DPZero: Private Fine-Tuning of Language Models without Backpropagation", ICML 2024); client-level DP, whose
bound is the decoded update's sensitivity, is refused before training."""

from __future__ import annotations

import math

import pytest
import torch

import fedloom
from fedloom.algorithms._zo import ZOTrace
from fedloom.algorithms.fedkseed import upload_message
from fedloom.errors import ConfigError
from fedloom.pipeline.chain import UploadPipeline
from fedloom.pipeline.transforms import Clip, Gaussian

#: client 0's round: seed positions 1, 3, 3 with scalars 5, -2, 1 (K = 8)
TRACE = ZOTrace(positions=[1, 3, 3], grads=[5.0, -2.0, 1.0])


def _finish(*transforms):
    pipeline = UploadPipeline(0, tuple((type(t).__name__.lower(), t) for t in transforms))
    return pipeline.finish(0, 1, upload_message(TRACE, 8, 1.0, history=False), {})


def test_clip_acts_on_the_scalars_sent() -> None:
    received, nbytes, _ = _finish(Clip(norm=1.0))
    assert nbytes == 3 * (2 + 4)  # still 3 × (int16 index + float32 scalar)
    norm = math.sqrt(25 + 4 + 1)  # ‖ĝ‖ of what is sent (the decoded sums [5, -1] would have √26)
    expected = torch.zeros(8)
    expected[1], expected[3] = 5 / norm, -1 / norm
    torch.testing.assert_close(received["scalars"], expected)


def test_noise_lands_only_on_the_seeds_used() -> None:
    received, nbytes, _ = _finish(Clip(norm=1.0), Gaussian(multiplier=1.0))
    assert nbytes == 18
    nonzero = torch.nonzero(received["scalars"]).flatten().tolist()
    assert nonzero == [1, 3]  # noise on the decoded K-vector would touch all 8 seeds


def test_client_level_dp_is_refused_before_training() -> None:
    cfg = {"algorithm": "fedkseed", "dataset": "digits", "clients": 4, "rounds": 1, "model": "logreg",
           "transform": "dp", "fedkseed": {"k": 8, "steps": 2}}
    with pytest.raises(ConfigError, match="use --transform clip,gaussian"):
        fedloom.run(cfg, out=None)
