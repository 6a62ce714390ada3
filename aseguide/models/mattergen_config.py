"""Hydra configurations of MatterGen models, written by aseguide.

MatterGen checkpoints carry their full resolved Hydra configuration in
``<dir>/config.yaml`` under the key ``lightning_module``. The PyPI wheel ships no
configuration files, so aseguide writes its own (for the tiny test model, the offline
models it trains, and the random full-size model of the benchmarks), naming MatterGen's
classes through ``_target_`` keys exactly as a released checkpoint does.

Examples
--------
>>> cfg = lightning_module_config(hidden_dim=16, num_blocks=1)
>>> cfg["lightning_module"]["diffusion_module"]["model"]["_target_"]
'mattergen.denoiser.GemNetTDenoiser'
"""

from __future__ import annotations

from typing import Any

__all__ = ["lightning_module_config", "MP20_AVERAGE_DENSITY", "FULL_SIZE", "sampler_settings"]

#: Average density (atoms/Å^3) of MP-20, the lattice prior of the released checkpoints.
MP20_AVERAGE_DENSITY = 0.05771451654022283

#: Architecture of the released checkpoints (GemNet-T, 512-dim, 4 blocks).
FULL_SIZE = dict(hidden_dim=512, num_blocks=4, num_radial=128, emb_size_trip=64, emb_size_rbf=16,
                 emb_size_cbf=16, emb_size_bil_trip=64, num_spherical=7)

#: Settings of MatterGen's default predictor-corrector sampler.
sampler_settings: dict[str, Any] = {
    "positions_corrector_snr": 0.4,
    "lattice_corrector_snr": 0.2,
    "max_step_size": 1e6,
    "n_steps_corrector": 1,
}


def _chemical_system_embedding(hidden_dim: int) -> dict[str, Any]:
    return {
        "_target_": "mattergen.property_embeddings.PropertyEmbedding",
        "name": "chemical_system",
        "unconditional_embedding_module": {
            "_target_": "mattergen.property_embeddings.EmbeddingVector",
            "hidden_dim": hidden_dim,
        },
        "conditional_embedding_module": {
            "_target_": "mattergen.property_embeddings.ChemicalSystemMultiHotEmbedding",
            "hidden_dim": hidden_dim,
        },
        "scaler": {"_target_": "torch.nn.Identity"},
    }


def lightning_module_config(
    *,
    hidden_dim: int = 512,
    num_blocks: int = 4,
    num_radial: int = 128,
    num_spherical: int = 7,
    emb_size_trip: int = 64,
    emb_size_rbf: int = 16,
    emb_size_cbf: int = 16,
    emb_size_bil_trip: int = 64,
    cutoff: float = 7.0,
    max_neighbors: int = 50,
    max_cell_images_per_dim: int = 5,
    average_density: float = MP20_AVERAGE_DENSITY,
    conditions: tuple[str, ...] = (),
    num_steps: int = 1000,
    learning_rate: float = 1e-4,
    loss_weights: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A complete MatterGen configuration (``{"lightning_module": ...}``) as a plain dict.

    Parameters
    ----------
    hidden_dim, num_blocks, num_radial, num_spherical, emb_size_*:
        GemNet-T sizes; the defaults are those of the released checkpoints.
    cutoff, max_neighbors:
        Radius graph of the network.
    average_density:
        Atoms per Å^3 of the lattice prior's limit mean (MP-20 by default; 0.1587 for
        carbon_24).
    conditions:
        Properties the model is conditioned on; ``("chemical_system",)`` builds an
        adapter-style conditional model with classifier-free dropout.
    num_steps:
        Length of the species (D3PM) schedule used in training.
    learning_rate:
        Adam learning rate of the lightning module's optimizer.
    loss_weights:
        ``MaterialsLoss.weights`` (keys ``pos``, ``cell``, ``atomic_numbers``); default
        those of the released checkpoints, ``{"pos": 0.1, "cell": 1.0, "atomic_numbers": 1.0}``.
    """
    weights = {"pos": 0.1, "cell": 1.0, "atomic_numbers": 1.0}
    if loss_weights is not None:
        unknown_weights = set(loss_weights) - set(weights)
        if unknown_weights:
            raise ValueError(f"unknown loss weights {sorted(unknown_weights)}; known: {sorted(weights)}")
        weights.update({k: float(v) for k, v in loss_weights.items()})
    unknown = set(conditions) - {"chemical_system"}
    if unknown:
        raise ValueError(f"unsupported conditions {sorted(unknown)}; supported: ['chemical_system']")
    property_embeddings = {name: _chemical_system_embedding(hidden_dim) for name in conditions}
    model = {
        "_target_": "mattergen.denoiser.GemNetTDenoiser",
        "hidden_dim": hidden_dim,
        "denoise_atom_types": True,
        "atom_type_diffusion": "mask",
        "property_embeddings": property_embeddings,
        "property_embeddings_adapt": {},
        # At sampling time, logits of elements outside the conditioned chemical system
        # (and of elements MatterGen never generates) are masked out.
        "element_mask_func": {"_target_": "mattergen.denoiser.mask_disallowed_elements", "_partial_": True},
        "gemnet": {
            "_target_": "mattergen.common.gemnet.gemnet.GemNetT",
            "num_targets": 1,
            "latent_dim": hidden_dim * (1 + len(property_embeddings)),
            "atom_embedding": {
                "_target_": "mattergen.common.gemnet.layers.embedding_block.AtomEmbedding",
                "emb_size": hidden_dim,
                "with_mask_type": True,
            },
            "emb_size_atom": hidden_dim,
            "emb_size_edge": hidden_dim,
            "num_spherical": num_spherical,
            "num_radial": num_radial,
            "emb_size_trip": emb_size_trip,
            "emb_size_rbf": emb_size_rbf,
            "emb_size_cbf": emb_size_cbf,
            "emb_size_bil_trip": emb_size_bil_trip,
            "max_neighbors": max_neighbors,
            "max_cell_images_per_dim": max_cell_images_per_dim,
            "cutoff": cutoff,
            "num_blocks": num_blocks,
            "regress_stress": True,
            "otf_graph": True,
        },
    }
    corruption = {
        "_target_": "mattergen.diffusion.corruption.multi_corruption.MultiCorruption",
        "sdes": {
            "pos": {
                "_target_": "mattergen.common.diffusion.corruption.NumAtomsVarianceAdjustedWrappedVESDE",
                "wrapping_boundary": 1.0,
                "sigma_max": 5.0,
                "limit_info_key": "num_atoms",
            },
            "cell": {
                "_target_": "mattergen.common.diffusion.corruption.LatticeVPSDE.from_vpsde_config",
                "vpsde_config": {
                    "beta_min": 0.1,
                    "beta_max": 20.0,
                    "limit_density": average_density,
                    "limit_var_scaling_constant": 0.25,
                },
            },
        },
        "discrete_corruptions": {
            "atomic_numbers": {
                "_target_": "mattergen.diffusion.corruption.d3pm_corruption.D3PMCorruption",
                "offset": 1,
                "d3pm": {
                    "_target_": "mattergen.diffusion.d3pm.d3pm.MaskDiffusion",
                    "dim": 101,
                    "schedule": {
                        "_target_": "mattergen.diffusion.d3pm.d3pm.create_discrete_diffusion_schedule",
                        "kind": "standard",
                        "num_steps": num_steps,
                    },
                },
            }
        },
    }
    diffusion_module: dict[str, Any] = {
        "_target_": "mattergen.diffusion.diffusion_module.DiffusionModule",
        "model": model,
        "corruption": corruption,
        "loss_fn": {
            "_target_": "mattergen.common.loss.MaterialsLoss",
            "reduce": "sum",
            "include_pos": True,
            "include_cell": True,
            "include_atomic_numbers": True,
            "d3pm_hybrid_lambda": 0.01,
            "weights": weights,
        },
    }
    if property_embeddings:
        diffusion_module["pre_corruption_fn"] = {
            "_target_": "mattergen.property_embeddings.SetEmbeddingType",
            "p_unconditional": 0.2,
            "dropout_fields_iid": False,
        }
    return {
        "lightning_module": {
            "_target_": "mattergen.diffusion.lightning_module.DiffusionLightningModule",
            "optimizer_partial": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": learning_rate},
            "diffusion_module": diffusion_module,
        }
    }
