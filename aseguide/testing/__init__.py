"""Helpers for tests and benchmarks: random models in the real checkpoint layout.

The tiny model builder is production code (``tiny-random`` is a user-facing model
name) and lives in :mod:`aseguide.models.tiny`; it is re-exported here for tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from aseguide.models.tiny import TINY_SIZE, calibrate_output_scale, make_tiny_model

__all__ = ["make_tiny_model", "make_model_from_config", "sampler_step_seconds", "TINY_SIZE", "SCALER_STATS"]


#: Fitted-looking ``(mean, std)`` of each property's ``StandardScalerTorch``, in MatterGen's
#: units (log10 units for a scaler with ``log10_transform``), of the order of its training data.
SCALER_STATS = {
    "dft_band_gap": (0.8, 1.4),
    "dft_mag_density": (0.02, 0.04),
    "hhi_score": (3500.0, 2200.0),
    "ml_bulk_modulus": (2.0, 0.3),
    "dft_bulk_modulus": (110.0, 70.0),
    "dft_shear_modulus": (50.0, 40.0),
    "energy_above_hull": (0.04, 0.05),
    "formation_energy_per_atom": (-1.5, 1.0),
}


def make_model_from_config(
    config_path: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    adapter_std: float = 0.05,
    calibrate: bool = True,
    output_rms: float = 1.0,
) -> Path:
    """Build a randomly initialised model of the architecture of a MatterGen ``config.yaml``.

    The model is instantiated from ``lightning_module`` of the file with MatterGen's own
    classes, exactly as the file writes it (e.g. a released checkpoint's configuration,
    see ``../shared/data/mattergen-checkpoint-configs/``), and saved with that same file
    in the checkpoint layout (``config.yaml`` + ``checkpoints/last.ckpt``), so that
    :func:`aseguide.load_model` loads it as it loads a downloaded checkpoint. Three
    changes make the random model usable in tests:

    * every ``StandardScalerTorch`` (created from ``torch.empty``) gets the fitted-looking
      statistics of :data:`SCALER_STATS` for its property;
    * the adapter's mixin layers, zero-initialised by MatterGen (conditions have no
      effect until trained), get normal weights of standard deviation ``adapter_std``,
      so that conditions reach the network;
    * with ``calibrate``, the final force layers are rescaled as in :func:`make_tiny_model`.

    Parameters
    ----------
    config_path:
        A MatterGen ``config.yaml`` with a ``lightning_module`` section.
    directory:
        Where to write the checkpoint folder (created if needed).
    seed:
        Seed of the random initialisation.
    adapter_std:
        Standard deviation of the adapter mixin weights (0 keeps MatterGen's zeros).
    calibrate, output_rms:
        See :func:`make_tiny_model`.

    Returns
    -------
    pathlib.Path
        The checkpoint directory.

    Raises
    ------
    ValueError
        A file without ``lightning_module``, or a scaler of a property without statistics.
    """
    import shutil

    from aseguide.models._mattergen_compat import prepare_mattergen

    prepare_mattergen()
    from hydra.utils import instantiate
    from mattergen.common.utils.data_utils import StandardScalerTorch
    from mattergen.property_embeddings import PropertyEmbedding
    from omegaconf import OmegaConf

    config_path = Path(config_path)
    config = OmegaConf.load(config_path)
    if "lightning_module" not in config:
        raise ValueError(f"{str(config_path)!r} has no 'lightning_module' section: not a MatterGen config")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = instantiate(config.lightning_module)
        with torch.no_grad():
            for embedding in module.modules():
                if isinstance(embedding, PropertyEmbedding) and isinstance(embedding.scaler, StandardScalerTorch):
                    if embedding.name not in SCALER_STATS:
                        raise ValueError(f"no scaler statistics for property {embedding.name!r}; "
                                         f"known: {sorted(SCALER_STATS)}")
                    mean, std = SCALER_STATS[embedding.name]
                    embedding.scaler.means.fill_(mean)
                    embedding.scaler.stds.fill_(std)
            for name, parameter in module.named_parameters():
                if ".cond_mixin_layers." in name and adapter_std > 0:
                    parameter.normal_(0.0, adapter_std)
    if calibrate:  # one pass on small probes: full-size networks are slow on a CPU
        calibrate_output_scale(module, target_rms=output_rms, seed=seed, sizes=(4, 8), passes=1)
    directory = Path(directory)
    (directory / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config_path, directory / "config.yaml")
    torch.save({"state_dict": module.state_dict(), "aseguide": {"kind": "random", "seed": seed,
                                                                  "config": str(config_path)}},
               directory / "checkpoints" / "last.ckpt")
    return directory


def sampler_step_seconds(model, batch_size: int, n_atoms: int, t: float = 0.5) -> float:
    """Seconds of one unguided predictor-corrector step (two network calls) of ``model``.

    Both calls run on the prior state (realistic density and graph): a random network
    would blow the cell up after one real step and make later steps unrealistically
    cheap (empty graphs). Used by the benchmarks.

    Examples
    --------
    >>> import tempfile
    >>> from aseguide import load_model
    >>> model = load_model(make_tiny_model(tempfile.mkdtemp()), device="cpu")
    >>> sampler_step_seconds(model, 2, 4) > 0
    True
    """
    import time

    session = model.session(torch.full((batch_size,), n_atoms), 1000)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = session.prior()
    times = torch.full((batch_size,), t, device=session.device)
    with torch.no_grad():
        session.score(x, times)  # warm-up
        start = time.perf_counter()
        session.corrector(x, times)
        session.predictor(x, times, session.score(x, times))
        if session.device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start
