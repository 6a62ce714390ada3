"""How much of the lattice noise a trained model explains, by diffusion time.

A model whose lattice score is not learned cannot be sampled: the reverse lattice process
expands any deviation from the prior mean by 1/alpha(1) (about 150 in length for
MatterGen's schedule) unless the score pulls it back, and the sampled cells blow up. This
script noises held-out structures with the model's own corruption at a few times t, asks
the network for the lattice noise and reports the fraction of the noise's variance it
leaves unexplained (1 = no better than predicting zero), split into the isotropic part
(volume) and the rest (shape). A well-trained model is far below 1 at every t.

Usage, from the repository root::

    python examples/carbon/lattice_check.py --model runs/carbon-24-small --num-structures 192
"""

from __future__ import annotations

import argparse
import sys

import torch


def _isotropic(matrix: torch.Tensor) -> torch.Tensor:
    trace = matrix.diagonal(dim1=-2, dim2=-1).sum(-1) / 3.0
    return trace[:, None, None] * torch.eye(3, dtype=matrix.dtype)


def unexplained_lattice_noise(model, graphs: list, times: list[float], batch_size: int = 64,
                              seed: int = 0) -> list[dict[str, float]]:
    """Fraction of the lattice noise variance the network leaves unexplained, per time.

    Parameters
    ----------
    model : aseguide.models.mattergen.MatterGenModel
        A loaded MatterGen backend (``load_model``).
    graphs : list of ChemGraph
        Clean structures (``aseguide.training.data.to_chemgraphs``).
    times : list of float
        Diffusion times in (0, 1].
    batch_size, seed : int
        Structures per network call; seed of the noise.

    Returns
    -------
    list of dict
        ``{"t", "isotropic", "anisotropic"}`` per time.
    """
    from mattergen.common.data.collate import collate

    module = model.diffusion_module.eval()
    sde = module.corruption.sdes["cell"]
    rows = []
    for time in times:
        torch.manual_seed(seed)
        noise, predicted = [], []
        for start in range(0, len(graphs), batch_size):
            batch = collate(graphs[start:start + batch_size])
            t = torch.full((batch.get_batch_size(),), float(time))
            with torch.no_grad():
                noisy = module.corruption.sample_marginal(batch, t)
                out = module.model(noisy, t)
            alpha = sde._marginal_mean_coeff(t)[:, None, None]
            mean = sde.get_limit_mean(x=noisy["cell"], batch=noisy)
            sigma = torch.sqrt((1 - alpha**2) * sde.get_limit_var(x=noisy["cell"], batch=noisy))
            noise.append((noisy["cell"] - alpha * batch["cell"] - (1 - alpha) * mean) / sigma)
            predicted.append(-out["cell"])  # the network returns minus the noise (score x sigma)
        eps, pred = torch.cat(noise), torch.cat(predicted)
        iso_e, iso_p = _isotropic(eps), _isotropic(pred)
        rows.append({
            "t": float(time),
            "isotropic": float(((iso_e - iso_p) ** 2).sum() / (iso_e**2).sum()),
            "anisotropic": float((((eps - iso_e) - (pred - iso_p)) ** 2).sum() / ((eps - iso_e) ** 2).sum()),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lattice_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or name (load_model)")
    parser.add_argument("--data", default="../shared/data/carbon_24/test.csv")
    parser.add_argument("--num-structures", type=int, default=192)
    parser.add_argument("--times", default="0.1,0.3,0.5,0.7,0.9,0.99")
    parser.add_argument("--cache", default="runs/cache/lattice_check")
    args = parser.parse_args(argv)
    try:
        times = [float(t) for t in args.times.split(",")]
    except ValueError:
        parser.error(f"--times must be comma-separated numbers, got {args.times!r}")
    if not all(0.0 < t <= 1.0 for t in times):
        parser.error(f"--times must lie in (0, 1], got {args.times!r}")
    if args.num_structures < 1:
        parser.error(f"--num-structures must be at least 1, got {args.num_structures}")
    from aseguide import load_model
    from aseguide.training.data import read_dataset, to_chemgraphs

    try:
        model = load_model(args.model)
        table = read_dataset([args.data]).iloc[: args.num_structures]
    except (ValueError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    graphs = to_chemgraphs(table, args.cache)
    print("t      unexplained isotropic  unexplained anisotropic")
    for row in unexplained_lattice_noise(model, graphs, times):
        print(f"{row['t']:<6.3g} {row['isotropic']:>21.3f}  {row['anisotropic']:>23.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
