"""Cost of universal guidance relative to an unguided predictor-corrector step.

Times one diffusion step (``aseguide.guidance.diffusion_step``) on the same model,
session, batch and time, unguided and with several guidance settings, in one process,
and prints milliseconds per step and the ratio to the unguided step.

The state is the prior of the session (for MatterGen: uniform positions in a cell at
the prior's realistic density), stepped at the middle of the schedule, so every
configuration sees exactly the same graph.

Usage
-----
    python benchmarks/guidance_overhead.py                      # analytic backend
    python benchmarks/guidance_overhead.py --model tiny         # tiny random MatterGen
    python benchmarks/guidance_overhead.py --model full --device cuda --batch-size 64 --num-atoms 20
    python benchmarks/guidance_overhead.py --model carbon-24-small --objective coordination \
        --batch-size 16 --num-atoms 12 --steps 250 --threads 1   # a trained (packaged or folder) model

Targets (issue 4): backward-only (K=1, m=2, geometric objective) <= 1.15x unguided;
K passes <= K x 1.05 unguided; forward guidance <= 3x per pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from aseguide.guidance import diffusion_step
from aseguide.sampling.settings import GuidanceSettings

CONFIGS = [
    # name, forward g, backward k, m, K
    ("unguided", 0.0, 0.0, 0, 1),
    ("backward K=1 m=2", 0.0, 0.01, 2, 1),
    ("backward K=3 m=2", 0.0, 0.01, 2, 3),
    ("forward+backward K=1 m=2", 0.01, 0.01, 2, 1),
    ("forward+backward K=3 m=2", 0.01, 0.01, 2, 3),
    ("forward only K=1", 0.01, 0.0, 0, 1),
]


def build_model(kind: str):
    if kind not in ("analytic", "tiny", "full"):
        from aseguide.models import load_model

        return load_model(kind, max_atoms=None)
    if kind == "analytic":
        from aseguide.models.analytic import GaussianBackend

        return GaussianBackend(dtype=torch.float32)
    from aseguide.models import load_model
    from aseguide.testing import make_tiny_model

    sizes = {}
    if kind == "full":
        from aseguide.models.mattergen_config import FULL_SIZE

        sizes = FULL_SIZE
    path = make_tiny_model(tempfile.mkdtemp(prefix=f"aseguide-{kind}-"), **sizes)
    return load_model(str(path))


def build_objective(kind: str):
    from aseguide.constraints import Combined, Coordination, MinDistance, VolumePerAtom

    if kind == "volume":
        return VolumePerAtom(12.0)
    if kind == "coordination":
        return Combined([Coordination("C", "C", target=4), MinDistance(1.2)])
    raise ValueError(f"unknown objective {kind!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_step(session, x, t, objective, g, k, m, K) -> float:
    """Wall time (s) of one diffusion step with the given guidance."""
    _sync(session.device)
    start = time.perf_counter()
    if g == 0 and (k == 0 or m == 0) and K == 1:
        diffusion_step(session, x, t)
    else:
        settings = GuidanceSettings(forward_strength=g, backward_strength=k, backward_steps=m, recurrence=K,
                                    start=0.0)
        diffusion_step(session, x, t, objective, settings)
    _sync(session.device)
    return time.perf_counter() - start


def measure(session, x, t, objective, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Times of every configuration, interleaved round by round (so load changes hit all alike)."""
    times: dict[str, list[float]] = {name: [] for name, *_ in CONFIGS}
    for i in range(warmup + repeats):
        for name, g, k, m, K in CONFIGS:
            seconds = run_step(session, x, t, objective, g, k, m, K)
            if i >= warmup:
                times[name].append(seconds)
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="analytic",
                        help="'analytic', 'tiny', 'full' (random weights), or a model name/folder for load_model")
    parser.add_argument("--objective", choices=["volume", "coordination"], default="volume")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-atoms", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000, help="schedule length (the step timed is the middle one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.model)
    objective = build_objective(args.objective)
    torch.manual_seed(args.seed)
    session = model.session(torch.full((args.batch_size,), args.num_atoms), args.steps, device=args.device)
    x = session.prior()
    if args.model == "analytic":
        x = x.replace(numbers=torch.full_like(x.numbers, 6))
    t = session.timesteps()[args.steps // 2].repeat(args.batch_size)
    print(f"model={args.model} objective={args.objective} batch={args.batch_size}x{args.num_atoms} "
          f"device={session.device} threads={torch.get_num_threads()} t={float(t[0]):.3f} "
          f"repeats={args.repeats} (interleaved)")
    times = measure(session, x, t, objective, args.repeats, args.warmup)
    print(f"{'configuration':28s} {'median ms':>10s} {'min ms':>9s} {'ratio(median)':>14s} {'ratio(min)':>11s}")
    base_med = statistics.median(times["unguided"])
    base_min = min(times["unguided"])
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        print(f"{name:28s} {1000 * med:10.2f} {1000 * low:9.2f} {med / base_med:14.2f} {low / base_min:11.2f}")


if __name__ == "__main__":
    main()
