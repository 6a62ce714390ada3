"""Scaling of ``cluster: ray``: the same generation on 1 and on 2 local Ray workers.

Starts a private local Ray instance (``ray.init(num_cpus=...)``), then runs one
generation with ``cluster: {workers: 1}`` and the same with ``{workers: 2}`` (each worker
one torch thread), checks that both wrote the same structures file, and prints the
generation time of each (workers already started; model loading is reported apart) and
the ratio. On a 2-core machine the ideal ratio is 2; other jobs on the machine lower it.

Usage::

    python benchmarks/ray_scaling.py                       # tiny random model, 16 structures
    python benchmarks/ray_scaling.py --num-structures 32 --steps 50 --model tiny-random
"""

from __future__ import annotations

import argparse
import filecmp
import tempfile
import time
from pathlib import Path


def run(args: argparse.Namespace, workers: int, out: Path):
    from aseguide.runs.config import GenerateConfig
    from aseguide.runs.generate import generate

    config = GenerateConfig(model=args.model, num_structures=args.num_structures, batch_size=args.batch_size,
                            num_atoms=args.num_atoms, steps=args.steps, seed=0, device="cpu",
                            objectives=[{"type": "VolumePerAtom", "target": 12.0}],
                            guidance={"recurrence": 1, "backward_strength": 0.05},
                            cluster={"workers": workers}, output=str(out))
    return generate(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model (default: a tiny random model built in a temp folder)")
    parser.add_argument("--num-structures", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--num-atoms", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray instance")
    args = parser.parse_args()

    import ray

    tmp = Path(tempfile.mkdtemp(prefix="ray_scaling_"))
    if args.model is None:
        from aseguide.testing import make_tiny_model

        args.model = str(make_tiny_model(tmp / "tiny"))  # one copy on disk: every worker loads the same weights
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        seconds = {}
        for workers in (1, 2):
            begin = time.perf_counter()
            summary = run(args, workers, tmp / f"w{workers}")
            seconds[workers] = summary.seconds
            print(f"{workers} worker(s): {summary.num_structures} structures in {summary.batches_done} batches, "
                  f"generation {summary.seconds:.2f} s (workers started in {summary.load_seconds:.2f} s; "
                  f"{time.perf_counter() - begin:.2f} s in all)")
    finally:
        ray.shutdown()
    same = filecmp.cmp(tmp / "w1" / "structures.extxyz", tmp / "w2" / "structures.extxyz", shallow=False)
    print(f"same structures file: {same}")
    print(f"speed-up 2 workers vs 1: {seconds[1] / seconds[2]:.2f}x")


if __name__ == "__main__":
    main()
