"""Where one round's time goes: cProfile around one fedloom round of a benchmark workload.

    python benchmarks/profile_round.py --workload w1 --engine serial --top 20

Builds the same configuration as benchmarks/engines.py (one torch thread), runs round 1 under cProfile and
prints the functions with the most internal time (torch kernels appear as built-in methods).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="w1", choices=["w1", "m1"])
    parser.add_argument("--engine", default="serial", help="an engines.py mode, e.g. serial, serial+bf16")
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from engines import run_config
    from fedloom.rounds import federation_of
    from fedloom.run import build_experiment, load_data, step_round

    with tempfile.TemporaryDirectory() as scratch:
        cfg = run_config(args.workload, args.engine, 1, scratch)
        data = load_data(cfg, torch.device("cpu"))
        exp = build_experiment(cfg, data, torch.device("cpu"))
        server = exp.algorithm.init_server(exp.runtime.init_params, federation_of(exp.data))
        profile, start = cProfile.Profile(), time.perf_counter()
        profile.enable()
        step_round(exp, server, 1, {})
        profile.disable()
        print(f"round 1 of {args.workload} on {args.engine}: {time.perf_counter() - start:.2f} s under cProfile")
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
        exp.engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
