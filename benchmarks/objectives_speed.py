"""Forward + backward time of guidance objectives on large batches.

Measures, on random crystals at a fixed density (Cu/P/Si, 12 Å³ per atom, random
fractional coordinates and slightly skewed cells):

1. ``Coordination("Cu", ["P", "Si"], 4)`` and a ``Combined`` of three objectives
   (coordination, volume per atom, minimum distance) on a batch of 1024 structures of
   20 atoms;
2. the scaling of the same ``Combined`` with the number of atoms per structure
   (8, 20, 80, 200 atoms; 256 structures, 1024 with ``--full``), reported as time per
   atom, which stays roughly constant when the cost is linear in the number of atoms;
3. the ratio, per structure, of the ``Combined`` forward + backward to one unguided
   predictor-corrector step of the tiny MatterGen test model (20 atoms per structure,
   on its prior state), in the same process (issue 3's target: under 2 %).

Usage::

    python benchmarks/objectives_speed.py              # short run (< 2 min on 2 CPU cores)
    python benchmarks/objectives_speed.py --full       # 1024 structures for the scaling too
    python benchmarks/objectives_speed.py --device cuda --full
    python benchmarks/objectives_speed.py --threads 1    # stable figures on a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aseguide.constraints import Combined, Coordination, MinDistance, VolumePerAtom
from aseguide.neighbors import neighbor_list
from aseguide.state import CrystalBatch

VOLUME_PER_ATOM = 12.0
SPECIES = torch.tensor([29, 15, 14])  # Cu, P, Si


def random_batch(n_structures: int, n_atoms: int, device: str, dtype: torch.dtype, seed: int = 0) -> CrystalBatch:
    generator = torch.Generator().manual_seed(seed)
    length = (VOLUME_PER_ATOM * n_atoms) ** (1.0 / 3.0)
    cell = torch.eye(3) * length + 0.1 * length * torch.randn(n_structures, 3, 3, generator=generator)
    cell = cell * (VOLUME_PER_ATOM * n_atoms / torch.linalg.det(cell).abs())[:, None, None] ** (1.0 / 3.0)
    frac = torch.rand(n_structures * n_atoms, 3, generator=generator)
    numbers = SPECIES[torch.randint(0, 3, (n_structures * n_atoms,), generator=generator)]
    return CrystalBatch(
        frac=frac.to(device, dtype),
        cell=cell.to(device, dtype),
        numbers=numbers.to(device),
        num_atoms=torch.full((n_structures,), n_atoms, dtype=torch.long, device=device),
    )


def time_forward_backward(objective, batch: CrystalBatch, repeats: int) -> float:
    """Median seconds of loss(batch).sum().backward() over ``repeats`` runs (after a warm-up)."""
    times = []
    for attempt in range(repeats + 1):
        frac = batch.frac.detach().clone().requires_grad_(True)
        cell = batch.cell.detach().clone().requires_grad_(True)
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        objective.loss(batch.replace(frac=frac, cell=cell)).sum().backward()
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        if attempt > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_search(batch: CrystalBatch, cutoff: float, repeats: int) -> float:
    times = []
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        neighbor_list(batch, cutoff)
        if batch.device.type == "cuda":
            torch.cuda.synchronize()
        if attempt > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_step_seconds(n_structures: int, n_atoms: int, device: str) -> float:
    """Seconds of one unguided corrector + predictor step of the tiny random MatterGen."""
    import tempfile

    from aseguide.models import load_model
    from aseguide.testing import make_tiny_model, sampler_step_seconds

    with tempfile.TemporaryDirectory() as folder:
        model = load_model(make_tiny_model(folder), device=device)
    return sampler_step_seconds(model, n_structures, n_atoms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--full", action="store_true", help="1024 structures for every measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    n_main = 1024
    n_scaling = 1024 if args.full else 256

    coordination = Coordination("Cu", ["P", "Si"], target=4)
    combined = Combined([coordination, VolumePerAtom(12.0), MinDistance(1.5)])
    print(f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()}")
    print(f"search radius of the coordination: {coordination.counter.search_radius:.2f} Å")

    batch = random_batch(n_main, 20, args.device, dtype)
    print(f"\n{n_main} structures x 20 atoms, forward+backward (median of {args.repeats}):")
    print(f"  neighbour search alone (r={coordination.counter.search_radius:.2f}): "
          f"{time_search(batch, coordination.counter.search_radius, args.repeats) * 1e3:8.1f} ms")
    print(f"  Coordination                  : {time_forward_backward(coordination, batch, args.repeats) * 1e3:8.1f} ms")
    combined_seconds = time_forward_backward(combined, batch, args.repeats)
    print(f"  Combined (3 objectives)       : {combined_seconds * 1e3:8.1f} ms")
    n_sampler = 1024 if args.full else 128
    step = tiny_step_seconds(n_sampler, 20, args.device)
    ratio = (combined_seconds / n_main) / (step / n_sampler)
    print(f"  tiny MatterGen step, {n_sampler} x 20 atoms: {step * 1e3:8.1f} ms "
          f"-> Combined / step per structure = {100 * ratio:.2f} %")

    print(f"\nscaling, Combined, {n_scaling} structures, {VOLUME_PER_ATOM} Å³/atom:")
    print(f"  {'atoms':>6} {'total ms':>10} {'µs/atom':>9}")
    for n_atoms in (8, 20, 80, 200):
        batch = random_batch(n_scaling, n_atoms, args.device, dtype, seed=n_atoms)
        seconds = time_forward_backward(combined, batch, args.repeats)
        print(f"  {n_atoms:>6} {seconds * 1e3:>10.1f} {seconds / batch.n_atoms * 1e6:>9.2f}")


if __name__ == "__main__":
    main()
