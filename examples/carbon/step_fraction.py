"""How far one guided step moves the sample: the fraction of a backward-guidance shift kept.

Backward guidance moves the clean estimate ``x̂0`` by ``delta`` (``shift_scores``); the
predictor then moves the state by only part of it. For a few steps of a model's
schedule this prints that fraction for the positions and the lattice, measured on the
predictor's mean (no noise): ``(mean(s + shift(delta)) - mean(s)) / delta``.

Usage: ``python examples/carbon/step_fraction.py [--model carbon-24-small --steps 250]``.
"""

import argparse

import torch

from aseguide.models import load_model
from aseguide.sampling.guidance import shift_scores


def step_fractions(model, steps=250, indices=(25, 125, 200, 237, 245, 248, 249), num_atoms=(8, 12), seed=0,
                   size=0.01):
    """``{step index: (t, positions fraction, lattice fraction)}`` along one unguided trajectory."""
    torch.manual_seed(seed)
    session = model.session(torch.tensor(num_atoms), steps=steps)
    x = session.prior()
    n = len(num_atoms)
    out = {}
    for index, t in enumerate(session.timesteps()):
        t = t.expand(n)
        with torch.no_grad():
            x = session.corrector(x, t)
            scores = session.score(x, t)
            if index in indices:
                delta = {"positions": torch.zeros_like(x.frac), "lattice": torch.zeros_like(x.cell)}
                delta["positions"][:, 0] = size
                delta["lattice"][:, 0, 0] = size
                session.predictor(x, t, scores)
                plain = session.last_mean()
                session.predictor(x, t, shift_scores(session, x, t, scores, delta))
                shifted = session.last_mean()
                moved = (shifted.frac - plain.frac + 0.5) % 1.0 - 0.5  # periodic difference
                out[index] = (float(t[0]), float(moved[:, 0].mean()) / size,
                              float((shifted.cell - plain.cell)[:, 0, 0].mean()) / size)
            x = session.predictor(x, t, scores)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="carbon-24-small")
    parser.add_argument("--steps", type=int, default=250)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    last = args.steps - 1
    indices = sorted({int(args.steps * f) for f in (0.1, 0.5, 0.8, 0.95, 0.98)} | {last - 1, last})
    print("| step | t | positions | lattice |\n|---|---|---|---|")
    for index, (t, positions, lattice) in step_fractions(model, args.steps, indices).items():
        print(f"| {index} | {t:.3f} | {positions:.2%} | {lattice:.2%} |")


if __name__ == "__main__":
    main()
