"""The C heap option (--malloc): tuned steady-state training steps fault no pages; never part of a run's identity."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fedloom.checkpoint import config_identity
from fedloom.config import RunConfig
from fedloom.engines.heap import configure_heap

STEADY_STEPS = """
import resource, sys, torch
import torch.nn.functional as F
from fedloom.engines.heap import configure_heap
torch.set_num_threads(1)
configure_heap(sys.argv[1])
net = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 64, 5), torch.nn.MaxPool2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
                          torch.nn.Linear(1024, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.005)
g = torch.Generator().manual_seed(0)
def step():
    x, y = torch.randn(10, 1, 28, 28, generator=g), torch.randint(0, 10, (10,), generator=g)
    opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
for _ in range(10):
    step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def page_faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", STEADY_STEPS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 40


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_heap_lets_steady_training_steps_fault_no_pages() -> None:
    """glibc's defaults fault in and zero 60-600 pages per FedAvgCNN step at batch 10 (erratic: its adaptive
    threshold does not settle); the tuned heap keeps the freed blocks, so after warm-up a step faults none."""
    if not configure_heap("tuned"):
        pytest.skip("not glibc")
    assert page_faults_per_step("tuned") < 25  # glibc's defaults: 63 at the least seen, mostly 350-600


def test_system_mode_changes_nothing_and_the_option_is_not_part_of_the_identity() -> None:
    assert configure_heap("system") is False
    assert config_identity(RunConfig(malloc="system")) == config_identity(RunConfig(malloc="tuned"))
    assert "malloc" not in config_identity(RunConfig())
