"""Benchmark: one ``EnergyAboveHull`` evaluation with gradient vs one sampler step.

Times ``loss(batch)`` + ``backward`` for ``batch_size`` structures of ``n_atoms`` atoms
(Li-Co-O, random positions at a realistic density of ~10 Å³/atom, the state of a
noisy x̂0), after one warm-up call, and one unguided predictor-corrector step of a
MatterGen model (random weights; ``--sampler tiny`` or ``full``, the released
architecture) on a batch of the same size, in the same process. Run::

    python benchmarks/energy_above_hull_speed.py --potential chgnet --batch-size 256 --n-atoms 20 --sampler full

Prints a JSON line with the timings (seconds), the share spent building graphs and the
ratio energy evaluation / sampler step.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from pymatgen.analysis.phase_diagram import PDEntry

from aseguide.calculators.hull import ReferenceHull
from aseguide.calculators.potentials import get_potential
from aseguide.constraints.energy import EnergyAboveHull
from aseguide.state import CrystalBatch


def random_batch(batch_size: int, n_atoms: int, seed: int = 0, volume_per_atom: float = 10.0) -> CrystalBatch:
    """Random Li-Co-O crystals (at least one atom of each element) as a float64 batch."""
    rng = np.random.default_rng(seed)
    numbers = rng.choice([3, 27, 8], size=(batch_size, n_atoms))
    numbers[:, :3] = [3, 27, 8]
    a = (volume_per_atom * n_atoms) ** (1 / 3)
    cell = np.eye(3)[None] * a + rng.normal(scale=0.05 * a, size=(batch_size, 3, 3))
    frac = rng.random((batch_size * n_atoms, 3))
    return CrystalBatch(
        frac=torch.as_tensor(frac),
        cell=torch.as_tensor(cell),
        numbers=torch.as_tensor(numbers.reshape(-1)),
        num_atoms=torch.full((batch_size,), n_atoms),
    )


def run(potential: str = "chgnet", batch_size: int = 256, n_atoms: int = 20, device: str | None = None,
        repeats: int = 1) -> dict:
    """Time one evaluation with gradient; returns a dict of timings."""
    pot = get_potential(potential, **({"device": device} if device else {}))
    hull = ReferenceHull([PDEntry("Li", -1.9), PDEntry("Co", -7.1), PDEntry("O", -4.9), PDEntry("LiCoO2", -4 * 6.4)])
    objective = EnergyAboveHull(pot, hull)
    warm = random_batch(2, n_atoms, seed=1)
    objective.loss(warm).sum()  # warm-up
    times, graph_times = [], []
    for r in range(repeats):
        batch = random_batch(batch_size, n_atoms, seed=10 + r)
        batch.frac.requires_grad_(True)
        batch.cell.requires_grad_(True)
        t0 = time.perf_counter()
        # graph building only (for the share of the total)
        for atoms in batch.detach().wrapped().to_atoms():
            pot._prepare(atoms)
        t1 = time.perf_counter()
        loss = objective.loss(batch)
        loss.sum().backward()
        if pot.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        graph_times.append(t1 - t0)
        times.append(t2 - t1)
    return {
        "potential": potential,
        "device": str(pot.device),
        "batch_size": batch_size,
        "n_atoms": n_atoms,
        "seconds_loss_and_grad": float(np.median(times)),
        "seconds_graph_building_alone": float(np.median(graph_times)),
        "finite_losses": int(torch.isfinite(loss).sum()),
        "torch_threads": torch.get_num_threads(),
    }


def random_model_step_seconds(kind: str, batch_size: int, n_atoms: int, device: str | None = None) -> float:
    """Seconds of one unguided corrector + predictor step of a random MatterGen model."""
    import tempfile

    from aseguide.models import load_model
    from aseguide.models.mattergen_config import FULL_SIZE
    from aseguide.testing import make_tiny_model, sampler_step_seconds

    with tempfile.TemporaryDirectory() as folder:
        sizes = FULL_SIZE if kind == "full" else {}
        path = make_tiny_model(folder, calibrate=False, **({**sizes, "cutoff": 7.0, "max_neighbors": 50}
                                                           if kind == "full" else {}))
        model = load_model(path, device=device)
    return sampler_step_seconds(model, batch_size, n_atoms)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--potential", default="chgnet")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-atoms", type=int, default=20)
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--sampler", choices=["none", "tiny", "full"], default="tiny",
                        help="also time one sampler step of this random MatterGen model")
    args = parser.parse_args(argv)
    result = run(args.potential, args.batch_size, args.n_atoms, args.device, args.repeats)
    if args.sampler != "none":
        step = random_model_step_seconds(args.sampler, args.batch_size, args.n_atoms, args.device)
        result.update(sampler=args.sampler, seconds_sampler_step=step,
                      ratio_energy_to_sampler_step=result["seconds_loss_and_grad"] / step)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
