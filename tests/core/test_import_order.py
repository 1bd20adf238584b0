"""Modules that sit where import circles meet import on their own, first thing in a fresh interpreter (a circle
that only works in one import order breaks whoever imports the other end first: a plugin, a notebook, a test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# each was (or sits beside) a module that failed to import first: pipeline.aggregators through the algorithms'
# per-step draws type, pipeline.wire through the gossip sparsifier that builds its Compact messages
FIRST_IMPORTS = ["fedloom.pipeline.aggregators", "fedloom.pipeline.wire", "fedloom.algorithms.draws",
                 "fedloom.algorithms.vhl", "fedloom.engines.local_sgd", "fedloom.pipeline.privacy.sample"]


def test_each_module_imports_first_in_a_fresh_interpreter() -> None:
    script = ("import subprocess, sys\n"
              "for name in sys.argv[1:]:\n"
              "    out = subprocess.run([sys.executable, '-c', f'import {name}'], capture_output=True, text=True)\n"
              "    print(name, out.returncode, out.stderr.strip().splitlines()[-1:] if out.returncode else '')\n")
    out = subprocess.run([sys.executable, "-c", script, *FIRST_IMPORTS], capture_output=True, text=True, timeout=600)
    failed = [line for line in out.stdout.splitlines() if not line.split()[1] == "0"]
    assert out.returncode == 0 and not failed, failed or out.stderr
