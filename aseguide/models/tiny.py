"""The tiny random MatterGen model (``tiny-random``) and its sizes.

Nothing here downloads: :func:`make_tiny_model` builds a randomly initialised
MatterGen model from MatterGen's own classes (through a Hydra configuration written by
:func:`aseguide.models.mattergen_config.lightning_module_config`) and saves it as
``<dir>/config.yaml`` + ``<dir>/checkpoints/last.ckpt``, exactly the layout of a
released checkpoint, so that :func:`aseguide.load_model` loads it through the real path.
The user-facing model names ``tiny-random`` and ``tiny-random-chemical-system``
(:mod:`aseguide.models.registry`) are built with it; :data:`TINY_SIZE` also gives the
``tiny`` training preset its network sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["make_tiny_model", "calibrate_output_scale", "TINY_SIZE"]

#: GemNet-T sizes of the tiny model (a few thousand parameters).
TINY_SIZE = dict(hidden_dim=16, num_blocks=1, num_radial=8, num_spherical=3, emb_size_trip=8,
                 emb_size_rbf=4, emb_size_cbf=4, emb_size_bil_trip=8, cutoff=7.0, max_neighbors=20,
                 max_cell_images_per_dim=5)


def make_tiny_model(
    directory: str | os.PathLike,
    conditioned: bool = False,
    *,
    seed: int = 0,
    calibrate: bool = True,
    output_rms: float = 1.0,
    average_density: float | None = None,
    **sizes: int,
) -> Path:
    """Build a tiny randomly initialised MatterGen model and save it in checkpoint layout.

    Parameters
    ----------
    directory : str or os.PathLike
        Where to write ``config.yaml`` and ``checkpoints/last.ckpt`` (created if needed).
    conditioned : bool
        ``True`` builds a ``chemical_system``-conditioned model (a property embedding with
        classifier-free dropout, as MatterGen's ``chemical_system`` checkpoint).
    seed : int
        Seed of the random initialisation.
    calibrate, output_rms : bool, float
        Calibration of the untrained network. A freshly initialised GemNet predicts
        ``score * sigma`` of order 1e-3, and MatterGen's Langevin corrector takes steps
        inversely proportional to the squared score norm, so an uncalibrated random model
        blows cells up within a few steps (MatterGen's own sampler too). With
        ``calibrate=True`` the weights of GemNet's final force layers are rescaled so that
        the root mean square of the positions output on prior samples is ``output_rms``
        (a trained model predicts unit-variance noise, i.e. about 1). This is the only
        change made to MatterGen's initialisation.
    average_density : float, optional
        Lattice prior density in atoms/Å^3 (default: MP-20's).
    **sizes : int
        Overrides of :data:`TINY_SIZE`.

    Returns
    -------
    pathlib.Path
        The checkpoint directory.

    Examples
    --------
    >>> import tempfile
    >>> path = make_tiny_model(tempfile.mkdtemp())
    >>> sorted(p.name for p in path.iterdir())
    ['checkpoints', 'config.yaml']
    """
    from aseguide.models._mattergen_compat import prepare_mattergen
    from aseguide.models.mattergen_config import MP20_AVERAGE_DENSITY, lightning_module_config

    prepare_mattergen()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    unknown = set(sizes) - set(TINY_SIZE)
    if unknown:
        raise ValueError(f"unknown size keys {sorted(unknown)}; known: {sorted(TINY_SIZE)}")
    config = lightning_module_config(
        **{**TINY_SIZE, **sizes},
        average_density=average_density or MP20_AVERAGE_DENSITY,
        conditions=("chemical_system",) if conditioned else (),
    )
    directory = Path(directory)
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = instantiate(OmegaConf.create(config)["lightning_module"])
    if calibrate:
        calibrate_output_scale(module, target_rms=output_rms, seed=seed)
    OmegaConf.save(OmegaConf.create(config), directory / "config.yaml")
    torch.save({"state_dict": module.state_dict(), "aseguide": {"kind": "tiny", "seed": seed,
                                                                  "calibrated": calibrate}},
               directory / "checkpoints" / "last.ckpt")
    return directory


def calibrate_output_scale(module, *, target_rms: float, seed: int, sizes: tuple[int, ...] = (4, 8, 12, 16),
                            passes: int = 2) -> None:
    """Rescale GemNet's final force layers so the positions output has rms ``target_rms``.

    The output is linear in the head weights, so one pass suffices and a second one checks.

    Parameters
    ----------
    module : mattergen.diffusion.lightning_module.DiffusionLightningModule
        The model, changed in place.
    target_rms : float
        Root mean square of the positions output wanted on prior samples.
    seed : int
        Seed of the probe structures.
    sizes : tuple of int
        Atom counts of the probe structures.
    passes : int
        Rescaling passes.
    """
    from mattergen.common.data.chemgraph import ChemGraph
    from mattergen.common.data.collate import collate

    diffusion_module = module.diffusion_module
    corruption = diffusion_module.corruption
    generator = torch.Generator().manual_seed(seed + 1)
    graphs = []
    for n in sizes:
        graphs.append(ChemGraph(pos=torch.rand(n, 3, generator=generator), cell=torch.eye(3)[None],
                                atomic_numbers=torch.full((n,), 101, dtype=torch.long),
                                num_atoms=torch.tensor(n), num_nodes=n))
    batch = collate(graphs)
    cell_sde = corruption.sdes["cell"]
    limit_mean = cell_sde.get_limit_mean(x=batch["cell"], batch=batch)
    batch = batch.replace(cell=limit_mean)
    heads = [p for name, p in diffusion_module.named_parameters() if name.endswith("out_forces.linear.weight")]
    module.eval()
    with torch.no_grad():
        for _ in range(passes):
            out = diffusion_module.model(batch, torch.full((len(graphs),), 0.5))
            rms = float(out["cell"].pow(2).mean().sqrt())
            if rms <= 0:
                return
            for head in heads:
                head.mul_(target_rms / rms)
