"""Benchmark: wall time of one unguided sampling run on a CPU, as a user would start it.

Times ``GuidedDiffusion(load_model(model), None, num_atoms=N, batch_size=B).run()`` at the
model's default step count (or ``--steps``), with model loading reported separately, and
prints the time per step and per structure. The issue target for ``carbon-24-small`` is
16 structures of 12 atoms in at most 3 minutes on 2 cores.

Usage: ``python benchmarks/cpu_sampling_time.py [--model carbon-24-small --batch-size 16
--num-atoms 12 --threads 2 --repeats 1]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from aseguide.models import load_model
from aseguide.optimize import GuidedDiffusion


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="carbon-24-small")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-atoms", type=int, default=12)
    parser.add_argument("--steps", type=int, default=None, help="default: the model's own step count")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.model)
    load_seconds = time.perf_counter() - start
    runs, steps = [], None
    for repeat in range(args.repeats):
        dynamics = GuidedDiffusion(model, None, num_atoms=args.num_atoms, batch_size=args.batch_size,
                                   steps=args.steps, seed=args.seed + repeat)
        start = time.perf_counter()
        dynamics.run()
        runs.append(time.perf_counter() - start)
        steps = dynamics.nsteps
    median = float(np.median(runs))
    result = {"model": args.model, "batch_size": args.batch_size, "num_atoms": args.num_atoms, "steps": steps,
              "threads": torch.get_num_threads(), "load_seconds": round(load_seconds, 2),
              "run_seconds": [round(r, 2) for r in runs], "median_seconds": round(median, 2),
              "ms_per_step": round(1000 * median / steps, 1),
              "seconds_per_structure": round(median / args.batch_size, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
