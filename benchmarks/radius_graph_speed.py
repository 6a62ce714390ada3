"""Benchmark: GemNet's periodic radius graph, MatterGen's padded search vs aseguide's pruned one.

Generates the same batch twice per round, once with MatterGen's ``radius_graph_pbc``
(``ASEGUIDE_RADIUS_GRAPH=mattergen``) and once with
:func:`aseguide.models.radius_graph.periodic_radius_graph`, alternating the order
between rounds, and reports the wall time of each, their ratio, and the largest
difference between the structures the two produce (the graphs are the same, so the
structures agree to float rounding amplified over the steps).

Usage: ``python benchmarks/radius_graph_speed.py [--model carbon-24-small --num-structures 50
--steps 50 --rounds 2 --threads 1]``
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from aseguide.models import load_model
from aseguide.models.radius_graph import RADIUS_GRAPH_ENV
from aseguide.optimize import GuidedDiffusion

ROOT = Path(__file__).resolve().parents[1]


def sample(model, args):
    dynamics = GuidedDiffusion(model, None, num_atoms=args.num_atoms, batch_size=args.num_structures,
                               steps=args.steps, seed=args.seed)
    start = time.perf_counter()
    dynamics.run()
    return time.perf_counter() - start, dynamics.get_structures()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="carbon-24-small")
    parser.add_argument("--num-structures", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model)
    # the atom counts of carbon_24's training split, as in the carbon examples
    args.num_atoms = yaml.safe_load((ROOT / "examples" / "carbon" / "unguided.yaml").read_text())["num_atoms"]
    times = {"mattergen": [], "aseguide": []}
    structures = {}
    for round_ in range(args.rounds):
        order = ["mattergen", "aseguide"] if round_ % 2 == 0 else ["aseguide", "mattergen"]
        for name in order:
            if name == "mattergen":
                os.environ[RADIUS_GRAPH_ENV] = "mattergen"
            else:
                os.environ.pop(RADIUS_GRAPH_ENV, None)
            seconds, atoms = sample(model, args)
            times[name].append(seconds)
            structures[name] = atoms
    os.environ.pop(RADIUS_GRAPH_ENV, None)
    volume = {name: np.array([a.get_volume() / len(a) for a in s]) for name, s in structures.items()}
    for name, values in times.items():
        print(f"{name:10s} radius graph: {np.median(values):8.1f} s (runs: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"speed-up (median): {np.median(times['mattergen']) / np.median(times['aseguide']):.2f}x; "
          f"{args.num_structures} structures, {args.steps} steps, threads {torch.get_num_threads()}")
    print(f"largest volume difference: {np.max(np.abs(volume['mattergen'] - volume['aseguide'])):.2e} Å^3/atom; "
          f"median volume {np.median(volume['aseguide']):.2f} Å^3/atom")


if __name__ == "__main__":
    main()
