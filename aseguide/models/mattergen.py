"""MatterGen backend: a pretrained MatterGen checkpoint as an aseguide score backend.

The backend wraps MatterGen's own network, noise processes, predictors and correctors
(installed from PyPI, imported through :mod:`aseguide.models._mattergen_compat`), and
adds what guidance needs on top: Tweedie estimates, exact re-noising kernels, score
shifts, and the species schedule of any length ``N``.

Unguided sampling through a :class:`MatterGenSession` performs exactly the operations
of MatterGen's ``PredictorCorrector`` (same classes, same order of random draws from
torch's global generator), so the same seed gives the same structures.

Examples
--------
>>> from aseguide import load_model                     # doctest: +SKIP
>>> model = load_model("chemical_system")               # doctest: +SKIP
>>> session = model.session(torch.tensor([8, 8]), steps=1000,
...                         conditions={"chemical_system": "Li-Co-O"},
...                         guidance_factor=2.0)         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from aseguide.composition import normalize_chemical_system  # noqa: F401  (its old place, re-exported)
from aseguide.models._mattergen_compat import prepare_mattergen
from aseguide.models.base import SamplingSession, ScoreBackend, Scores
from aseguide.models.conditions import check_conditions, describe_accepted
from aseguide.models.mattergen_config import sampler_settings
from aseguide.models.radius_graph import pruned_image_search
from aseguide.precision import (
    DEFAULT_PRECISION,
    PRECISIONS,
    check_precision,
    network_precision,
    uses_autocast,
)
from aseguide.state import CrystalBatch, symbols_to_numbers, wrap_fractional

__all__ = [
    "MatterGenModel",
    "MatterGenSession",
    "load_model",
    "PRETRAINED_MODELS",
    "HUB_REPOSITORY",
    "DEFAULT_MAX_ATOMS",
    "ELEMENT_MASK",
]

logger = logging.getLogger(__name__)

#: Hugging Face repository of the released checkpoints.
HUB_REPOSITORY = "microsoft/mattergen"
#: Released checkpoint names (folders ``checkpoints/<name>/`` of the hub repository).
PRETRAINED_MODELS = (
    "mattergen_base",
    "chemical_system",
    "space_group",
    "dft_mag_density",
    "dft_band_gap",
    "ml_bulk_modulus",
    "dft_mag_density_hhi_score",
    "chemical_system_energy_above_hull",
    "mp_20_base",
)
#: Released checkpoints were trained on cells of at most 20 atoms.
DEFAULT_MAX_ATOMS = 20

_POS, _CELL, _SPECIES = "pos", "cell", "atomic_numbers"

#: The sampling-time element mask MatterGen's own generator adds to every checkpoint it
#: loads (the released ``config.yaml`` files leave ``element_mask_func`` unset): species
#: logits of elements MatterGen never generates, and of elements outside a conditioned
#: ``chemical_system``, are set to -1e10.
ELEMENT_MASK = {"_target_": "mattergen.denoiser.mask_disallowed_elements", "_partial_": True}


def _add_element_mask(config) -> None:
    """Set the denoiser's ``element_mask_func`` to :data:`ELEMENT_MASK` where the config leaves it unset.

    This is what loading a checkpoint *for sampling* means in MatterGen (its generator
    overrides ``lightning_module.diffusion_module.model.element_mask_func``); a config
    that sets its own mask keeps it.
    """
    from omegaconf import OmegaConf

    denoiser = OmegaConf.select(config, "lightning_module.diffusion_module.model")
    if denoiser is not None and denoiser.get("element_mask_func") is None:
        denoiser.element_mask_func = dict(ELEMENT_MASK)


def _find_checkpoint(directory: Path) -> Path:
    last = directory / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    found = sorted(directory.rglob("last.ckpt")) or sorted(directory.rglob("*.ckpt"))
    if not found:
        raise ValueError(
            f"{str(directory)!r} is not a MatterGen checkpoint directory: no checkpoints/last.ckpt "
            "(expected <dir>/config.yaml and <dir>/checkpoints/last.ckpt)"
        )
    return found[0]


def _download_from_hub(name: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id=HUB_REPOSITORY, filename=f"checkpoints/{name}/checkpoints/last.ckpt")
        config = hf_hub_download(repo_id=HUB_REPOSITORY, filename=f"checkpoints/{name}/config.yaml")
    except Exception as error:  # network errors come in many types
        raise RuntimeError(
            f"could not fetch the MatterGen checkpoint {name!r} from the Hugging Face hub "
            f"({HUB_REPOSITORY}, folder checkpoints/{name}/): {type(error).__name__}: {error}. "
            f"Offline, copy that folder (config.yaml and checkpoints/last.ckpt) from a machine "
            f"with network access and load it by path: load_model('/path/to/{name}')"
        ) from error
    return Path(config).parent


#: What a checkpoint folder must hold, for error messages.
CHECKPOINT_LAYOUT = ("a MatterGen checkpoint folder holds config.yaml and checkpoints/last.ckpt, a PyTorch "
                     "Lightning checkpoint (a torch.save'd dict with a 'state_dict'); copy the folder again "
                     "(e.g. from the Hugging Face hub, microsoft/mattergen, checkpoints/<name>/)")


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    return _read_checkpoint(path)["state_dict"]


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            # Lightning checkpoints of the released models also pickle hyper-parameters.
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - truncated, random bytes, wrong format: name the file
        size = path.stat().st_size if path.exists() else 0
        raise ValueError(f"checkpoint file {str(path)!r} ({size} bytes) is corrupt or truncated and cannot be "
                         f"read ({type(error).__name__}: {error}); {CHECKPOINT_LAYOUT}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{str(path)!r} holds no 'state_dict': not a MatterGen/Lightning checkpoint; "
                         f"{CHECKPOINT_LAYOUT}")
    return checkpoint


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    max_atoms: int | None | str = "auto",
) -> "MatterGenModel":
    """Load a MatterGen checkpoint: a released model by name, or a local directory.

    Parameters
    ----------
    name_or_path:
        A local directory in MatterGen's layout (``config.yaml`` with the resolved Hydra
        configuration and ``checkpoints/last.ckpt``), or the name of a released
        checkpoint (``mattergen_base``, ``chemical_system``, ``mp_20_base``, ... see
        :data:`PRETRAINED_MODELS`), downloaded from the Hugging Face hub and cached by
        ``huggingface_hub``.
    device:
        Where the network lives (default: CUDA when available, else CPU).
    max_atoms:
        Largest number of atoms per structure accepted by the sampler; ``None`` lifts the
        limit. ``"auto"``: the value a model trained by ``aseguide train`` records in its
        checkpoint (24 for ``carbon-24-small``), else 20 (the released checkpoints were
        trained on at most 20 atoms).

    Raises
    ------
    ValueError
        Unknown name, or a directory that is not a checkpoint.
    RuntimeError
        A released checkpoint that cannot be downloaded (offline): the message says how
        to load a local copy.

    Notes
    -----
    The model is loaded for sampling, as MatterGen's own generator loads it: the
    denoiser gets MatterGen's element mask (:data:`ELEMENT_MASK`) when its config sets
    none (none of the released ``config.yaml`` files does), so species stay inside a
    conditioned ``chemical_system`` and among the elements MatterGen generates. The
    conditions the checkpoint accepts are in ``model.conditions``.

    Examples
    --------
    >>> from aseguide.testing import make_tiny_model
    >>> import tempfile
    >>> path = make_tiny_model(tempfile.mkdtemp())
    >>> model = load_model(path, device="cpu")
    >>> model.max_atoms
    20
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        directory = path
        name = path.name
    elif str(name_or_path) in PRETRAINED_MODELS:
        name = str(name_or_path)
        directory = _download_from_hub(name)
    elif path.exists():
        raise ValueError(f"{str(path)!r} is a file, not a MatterGen checkpoint directory")
    else:
        from aseguide.models.registry import packaged_model_path

        packaged = packaged_model_path(str(name_or_path))
        if packaged is None:
            raise ValueError(
                f"unknown model {str(name_or_path)!r}: not a directory and not a released checkpoint "
                f"(known names: {', '.join(PRETRAINED_MODELS)})"
            )
        directory, name = packaged, str(name_or_path)
    config_path = directory / "config.yaml"
    if not config_path.is_file():
        raise ValueError(
            f"{str(directory)!r} is not a MatterGen checkpoint directory: no config.yaml "
            "(expected <dir>/config.yaml and <dir>/checkpoints/last.ckpt)"
        )
    checkpoint_path = _find_checkpoint(directory)
    prepare_mattergen()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.load(config_path)
    if "lightning_module" not in config:
        raise ValueError(f"{str(config_path)!r} has no 'lightning_module' section: not a MatterGen config")
    _add_element_mask(config)
    module = instantiate(config.lightning_module)
    checkpoint = _read_checkpoint(checkpoint_path)
    result = module.load_state_dict(checkpoint["state_dict"], strict=False)
    if result.unexpected_keys or result.missing_keys:
        raise ValueError(
            f"checkpoint {str(checkpoint_path)!r} does not match its config: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(device).eval()
    sampling = dict((checkpoint.get("aseguide") or {}).get("sampling") or {})
    if max_atoms == "auto":
        max_atoms = int(sampling.get("max_atoms", DEFAULT_MAX_ATOMS))
    elif max_atoms is not None and (isinstance(max_atoms, bool) or not isinstance(max_atoms, int) or max_atoms < 1):
        raise ValueError(f"max_atoms must be a positive integer, None or 'auto', got {max_atoms!r}")
    return MatterGenModel(module, config, name=name, path=directory, max_atoms=max_atoms,
                          default_steps=int(sampling.get("steps", MatterGenModel.default_steps)))


class MatterGenModel(ScoreBackend):
    """A loaded MatterGen model (see :func:`load_model`)."""

    fields = ("positions", "lattice", "species")
    precisions = PRECISIONS

    def __init__(self, lightning_module, config, *, name: str, path: Path, max_atoms: int | None,
                 default_steps: int = 1000):
        prepare_mattergen()
        self.lightning_module = lightning_module
        self.diffusion_module = lightning_module.diffusion_module
        self.config = config
        self.name = name
        self.path = Path(path)
        self.max_atoms = max_atoms
        self.default_steps = default_steps
        denoiser = self.diffusion_module.model
        self.conditions = tuple(getattr(denoiser, "cond_fields_model_was_trained_on", ()) or ())
        for parameter in self.diffusion_module.parameters():
            parameter.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.diffusion_module.parameters()).device

    @property
    def supported_elements(self) -> frozenset[int] | None:
        """Elements the model can place.

        MatterGen's generated elements under its element mask (set by :func:`load_model`),
        else its whole species vocabulary.
        """
        from mattergen.common.utils.globals import MAX_ATOMIC_NUM, SELECTED_ATOMIC_NUMBERS

        if getattr(self.diffusion_module.model, "element_mask_func", None) is not None:
            return frozenset(int(z) for z in SELECTED_ATOMIC_NUMBERS)
        return frozenset(range(1, MAX_ATOMIC_NUM + 1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.diffusion_module.parameters())

    def todict(self) -> dict[str, Any]:
        return {"backend": "mattergen", "name": self.name, "path": str(self.path),
                "conditions": list(self.conditions), "max_atoms": self.max_atoms, "default_steps": self.default_steps}

    def __repr__(self) -> str:
        return (f"MatterGenModel(name={self.name!r}, parameters={self.num_parameters()}, "
                f"conditions={self.conditions}, device={self.device})")

    def validate_conditions(self, conditions: dict | None) -> dict:
        """Check condition names and values against this checkpoint; return them normalised.

        Parameters
        ----------
        conditions:
            ``{name: value}`` in MatterGen's names and units (see
            :data:`aseguide.models.conditions.PROPERTY_CONDITIONS`); ``None`` values are
            dropped.

        Raises
        ------
        ValueError
            A condition this checkpoint was not trained on, a value of the wrong type or
            outside the property's range, an unknown space group number, or a chemical
            system with an element MatterGen never generates; the message names the value
            and the conditions this checkpoint accepts.
        """
        checked = check_conditions(conditions, accepted=self.conditions, model=self.name)
        where = f"; model {self.name!r} accepts: {describe_accepted(self.conditions)}"
        denoiser = self.diffusion_module.model
        embeddings = {**dict(getattr(denoiser, "property_embeddings", {}) or {}),
                      **dict(getattr(denoiser, "property_embeddings_adapt", {}) or {})}
        for name, value in checked.items():
            if name == "chemical_system" and getattr(denoiser, "element_mask_func", None) is not None:
                from mattergen.common.utils.globals import SELECTED_ATOMIC_NUMBERS

                never = [e for e in value.split("-") if symbols_to_numbers([e])[0] not in SELECTED_ATOMIC_NUMBERS]
                if never:
                    raise ValueError(f"chemical_system={value!r}: MatterGen never generates {', '.join(never)} "
                                     f"(its sampling mask excludes them){where}")
            scaler = getattr(embeddings.get(name), "scaler", None)
            if getattr(scaler, "log10_transform", False) and value <= 0:
                raise ValueError(f"{name}={value!r} must be > 0 (model {self.name!r} learned it on a log "
                                 f"scale){where}")
        return checked

    def session(
        self,
        num_atoms: torch.Tensor,
        steps: int,
        *,
        conditions: dict | None = None,
        guidance_factor: float = 1.0,
        device: torch.device | str | None = None,
        precision: str = DEFAULT_PRECISION,
    ) -> "MatterGenSession":
        """A :class:`MatterGenSession`; ``precision`` is a policy of :mod:`aseguide.precision`."""
        return MatterGenSession(self, num_atoms, steps, conditions=conditions,
                                guidance_factor=guidance_factor, device=device, precision=precision)


@contextlib.contextmanager
def _geometry_in_fp32(denoiser: torch.nn.Module, device_type: str) -> Iterator[None]:
    """Inside an autocast region, run GemNet's geometry (positions, radius graph) without autocast.

    Temporarily wraps ``frac_to_cart_coords_with_lattice`` as GemNet's modules see it
    and the ``generate_interaction_graph`` method of this model's GemNet instance;
    everything is restored on exit.
    """
    import importlib

    def full_precision(function: Callable) -> Callable:
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            with torch.autocast(device_type=device_type, enabled=False):
                return function(*args, **kwargs)
        return wrapped

    patched: list[tuple[Any, str, Any]] = []
    try:
        for name in ("mattergen.common.gemnet.gemnet", "mattergen.common.gemnet.gemnet_ctrl"):
            module = importlib.import_module(name)
            original = getattr(module, "frac_to_cart_coords_with_lattice", None)
            if original is not None:
                patched.append((module, "frac_to_cart_coords_with_lattice", original))
                module.frac_to_cart_coords_with_lattice = full_precision(original)
        gemnet = getattr(denoiser, "gemnet", None)
        if gemnet is not None and hasattr(gemnet, "generate_interaction_graph"):
            gemnet.generate_interaction_graph = full_precision(gemnet.generate_interaction_graph)
            patched.append((gemnet, "generate_interaction_graph", None))
        yield
    finally:
        for owner, name, original in reversed(patched):
            if original is None:
                del owner.__dict__[name]  # the instance attribute: the class method shows again
            else:
                setattr(owner, name, original)


class MatterGenSession(SamplingSession):
    """Sampling one batch with a MatterGen model (see :class:`SamplingSession`).

    Lattices are MatterGen's symmetric polar form (``symmetric_lattice``): its training
    data are symmetrised so, and its lattice predictor symmetrises.

    ``precision`` (``"mixed"``, ``"fp32"`` or ``"bf16"``, see :mod:`aseguide.precision`)
    applies to the network call only; its outputs are cast back to float32 and all
    sampler math stays in float32.
    """

    symmetric_lattice = True

    def __init__(
        self,
        model: MatterGenModel,
        num_atoms: torch.Tensor | list[int],
        steps: int,
        *,
        conditions: dict | None = None,
        guidance_factor: float = 1.0,
        device: torch.device | str | None = None,
        precision: str = DEFAULT_PRECISION,
    ):
        prepare_mattergen()
        from hydra.utils import instantiate
        from mattergen.common.data.chemgraph import ChemGraph
        from mattergen.common.data.collate import collate
        from mattergen.common.data.transform import SetProperty
        from mattergen.common.diffusion.predictors_correctors import (
            LatticeAncestralSamplingPredictor,
            LatticeLangevinDiffCorrector,
        )
        from mattergen.diffusion.corruption.multi_corruption import MultiCorruption
        from mattergen.diffusion.d3pm.d3pm_predictors_correctors import D3PMAncestralSamplingPredictor
        from mattergen.diffusion.wrapped.wrapped_predictors_correctors import (
            WrappedAncestralSamplingPredictor,
            WrappedLangevinCorrector,
        )
        from mattergen.property_embeddings import SetConditionalEmbeddingType, SetUnconditionalEmbeddingType
        from omegaconf import OmegaConf

        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        num_atoms = torch.as_tensor(num_atoms, dtype=torch.long).reshape(-1)
        if num_atoms.numel() == 0:
            raise ValueError("num_atoms is empty: nothing to generate")
        if (num_atoms < 1).any():
            raise ValueError(f"every structure needs at least one atom, got num_atoms={num_atoms.tolist()}")
        largest = int(num_atoms.max())
        if model.max_atoms is not None and largest > model.max_atoms:
            raise ValueError(
                f"{largest} atoms per structure is more than model {model.name!r} supports "
                f"(max_atoms={model.max_atoms}); pass load_model(..., max_atoms=None) or a larger "
                "max_atoms to override at your own risk"
            )
        if guidance_factor < 0:
            raise ValueError(f"guidance_factor must be >= 0, got {guidance_factor}")
        self.precision = check_precision(precision)
        self.model = model
        self.conditions = model.validate_conditions(conditions)
        self.guidance_factor = float(guidance_factor)
        self.device = torch.device(device) if device is not None else model.device
        if self.device != model.device:
            model.diffusion_module.to(self.device)
        self.steps = steps
        self.num_atoms = num_atoms.to(self.device)

        module = model.diffusion_module
        sdes = module.corruption.sdes
        species_cfg = OmegaConf.to_container(
            model.config.lightning_module.diffusion_module.corruption.discrete_corruptions, resolve=True
        )
        species_cfg[_SPECIES]["d3pm"]["schedule"]["num_steps"] = steps
        discrete = {_SPECIES: instantiate(species_cfg[_SPECIES])}
        self.corruption = MultiCorruption(sdes=dict(sdes), discrete_corruptions=discrete)
        self._species_corruption = discrete[_SPECIES]
        self._pos_sde, self._cell_sde = sdes[_POS], sdes[_CELL]

        snr_pos = sampler_settings["positions_corrector_snr"]
        snr_cell = sampler_settings["lattice_corrector_snr"]
        max_step = sampler_settings["max_step_size"]
        n_corrector = sampler_settings["n_steps_corrector"]
        self._predictors = {
            _POS: WrappedAncestralSamplingPredictor(corruption=sdes[_POS], score_fn=None),
            _CELL: LatticeAncestralSamplingPredictor(corruption=sdes[_CELL], score_fn=None),
            _SPECIES: D3PMAncestralSamplingPredictor(corruption=discrete[_SPECIES], score_fn=None, predict_x0=True),
        }
        self._correctors = {
            _POS: WrappedLangevinCorrector(corruption=sdes[_POS], n_steps=n_corrector, score_fn=None,
                                           snr=snr_pos, max_step_size=max_step),
            _CELL: LatticeLangevinDiffCorrector(corruption=sdes[_CELL], n_steps=n_corrector, score_fn=None,
                                                snr=snr_cell, max_step_size=max_step),
        }
        self._n_corrector = n_corrector
        self._keep_conditioning = SetConditionalEmbeddingType()
        self._remove_conditioning = SetUnconditionalEmbeddingType()

        # Condition values enter each structure through MatterGen's own SetProperty
        # transform, as in MatterGen's condition loader (numbers become float tensors).
        set_properties = [SetProperty(name, value) for name, value in self.conditions.items()]
        graphs = []
        for n in num_atoms.tolist():
            graph = ChemGraph(
                pos=torch.full((n, 3), torch.nan),
                cell=torch.full((1, 3, 3), torch.nan),
                atomic_numbers=torch.full((n,), -1, dtype=torch.long),
                num_atoms=torch.tensor(n),
                num_nodes=n,
            )
            for set_property in set_properties:
                graph = set_property(graph)
            graphs.append(graph)
        self._template = collate(graphs).to(self.device)
        # A well-connected two-atom crystal appended to the batch when the network cannot
        # build any edge/triplet for the whole batch (GemNet-T fails on empty graphs).
        first = next(iter(graphs))
        pad = first.replace(pos=torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]),
                            cell=3.0 * torch.eye(3)[None],
                            atomic_numbers=torch.full((2,), -1, dtype=torch.long),
                            num_atoms=torch.tensor(2), num_nodes=2)
        self._padded_template = collate(graphs + [pad]).to(self.device)
        self._pad = pad.to(self.device)
        self._batch_idx = self.corruption._get_batch_indices(self._template)
        self.eps_t = 1.0 / steps
        self.t_max = float(self.corruption.T)
        self._timesteps = torch.linspace(self.t_max, self.eps_t, steps, device=self.device)
        self._dt = -torch.tensor((self.t_max - self.eps_t) / (steps - 1) if steps > 1 else self.t_max - self.eps_t,
                                 device=self.device)
        self._last_mean: CrystalBatch | None = None

    # ------------------------------------------------------------------ conversions
    def _graph(self, x: CrystalBatch):
        return self._template.replace(pos=x.frac, cell=x.cell, atomic_numbers=x.numbers)

    def _crystal(self, graph, like: CrystalBatch | None = None) -> CrystalBatch:
        batch = CrystalBatch(frac=graph[_POS], cell=graph[_CELL], numbers=graph[_SPECIES],
                             num_atoms=self.num_atoms, _batch=None if like is None else like._batch)
        return batch

    # ------------------------------------------------------------------ protocol
    def timesteps(self) -> torch.Tensor:
        return self._timesteps

    @property
    def dt(self) -> float:
        return float(self._dt)

    def prior(self) -> CrystalBatch:
        samples = {
            key: corruption.prior_sampling(
                shape=self._template[key].shape,
                conditioning_data=self._template,
                batch_idx=self._template.get_batch_idx(field_name=key),
            ).to(self.device)
            for key, corruption in self.corruption.corruptions.items()
        }
        graph = self._template.replace(**samples)
        return self._crystal(graph)

    def _call_network(self, graph, t: torch.Tensor):
        """``score_fn`` under the precision policy, floating outputs cast back to the state's dtype.

        Under a bf16 autocast the geometry inside GemNet (fractional to Cartesian
        coordinates, the periodic radius graph and its distances) still runs in float32:
        neighbour lists and cutoffs are decided at full precision, only the network's
        dense layers use bf16. GemNet's graph is searched with
        :func:`~aseguide.models.radius_graph.periodic_radius_graph` (MatterGen's graph,
        fewer candidate images).
        """
        if not uses_autocast(self.precision, self.device):
            with network_precision(self.precision, self.device), pruned_image_search():
                return self.model.diffusion_module.score_fn(graph, t)
        with network_precision(self.precision, self.device), pruned_image_search(), \
                _geometry_in_fp32(self.model.diffusion_module.model, self.device.type):
            out = self.model.diffusion_module.score_fn(graph, t)
        dtype = graph[_POS].dtype
        return out.replace(**{key: out[key].to(dtype) for key in (_POS, _CELL, _SPECIES)
                              if torch.is_floating_point(out[key]) and out[key].dtype != dtype})

    def _network_score(self, graph, t: torch.Tensor):
        try:
            return self._call_network(graph, t)
        except (IndexError, RuntimeError) as error:
            if "out of memory" in str(error):
                raise
            logger.warning("network failed on this batch (%s); retrying with a padding structure "
                           "so that the graph is not empty", error)
        n, s = graph["pos"].shape[0], graph["cell"].shape[0]
        padded = self._padded_template.replace(
            pos=torch.cat([graph["pos"], self._pad["pos"].to(graph["pos"].dtype)]),
            cell=torch.cat([graph["cell"], self._pad["cell"].to(graph["cell"].dtype)]),
            atomic_numbers=torch.cat([graph["atomic_numbers"], graph["atomic_numbers"][:1].expand(2)]),
        )
        for key in ("_USE_UNCONDITIONAL_EMBEDDING",):
            if key in graph:
                padded = padded.replace(**{key: {k: torch.cat([v, v[:1]]) for k, v in graph[key].items()}})
        out = self._call_network(padded, torch.cat([t, t[:1]]))
        return graph.replace(pos=out["pos"][:n], cell=out["cell"][:s], atomic_numbers=out["atomic_numbers"][:n])

    def _raw_score(self, graph, t: torch.Tensor):
        if not self.conditions:
            return self._network_score(self._remove_conditioning(graph), t)
        gamma = self.guidance_factor
        if abs(gamma - 1.0) < 1e-15:
            return self._network_score(self._keep_conditioning(graph), t)
        if abs(gamma) < 1e-15:
            return self._network_score(self._remove_conditioning(graph), t)
        conditional = self._network_score(self._keep_conditioning(graph), t)
        unconditional = self._network_score(self._remove_conditioning(graph), t)
        return unconditional.replace(**{
            key: torch.lerp(unconditional[key], conditional[key], gamma)
            for key in self.corruption.corrupted_fields
        })

    def score(self, x: CrystalBatch, t: torch.Tensor) -> Scores:
        out = self._raw_score(self._graph(x), t)
        return Scores(positions=out[_POS], lattice=out[_CELL], species=out[_SPECIES])

    def _scores_graph(self, x: CrystalBatch, scores: Scores):
        return self._template.replace(pos=scores.positions, cell=scores.lattice,
                                      atomic_numbers=scores.species if scores.species is not None
                                      else torch.zeros_like(x.numbers))

    def corrector(self, x: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        from mattergen.diffusion.corruption.multi_corruption import apply

        graph = self._graph(x)
        for _ in range(self._n_corrector):
            score_graph = self._raw_score(graph, t)
            results = apply(
                fns={k: c.step_given_score for k, c in self._correctors.items()},
                broadcast={"t": t, "dt": self._dt},
                x=graph,
                score=score_graph,
                batch_idx=self._batch_idx,
            )
            graph = graph.replace(**{k: v[0] for k, v in results.items()})
        return self._crystal(graph, like=x)

    def predictor(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        from mattergen.diffusion.corruption.multi_corruption import apply

        graph = self._graph(x)
        results = apply(
            fns={k: p.update_given_score for k, p in self._predictors.items()},
            x=graph,
            score=self._scores_graph(x, scores),
            broadcast=dict(t=t, batch=graph, dt=self._dt),
            batch_idx=self._batch_idx,
        )
        sample = graph.replace(**{k: v[0] for k, v in results.items()})
        mean = self._crystal(graph.replace(**{k: v[1] for k, v in results.items()}), like=x)
        if scores.species is not None:
            # Tokens still masked after the last step (only with very short schedules) take
            # the model's most likely species instead of the mask token.
            mean = mean.replace(numbers=torch.where(mean.numbers == self.mask_token,
                                                    self._most_likely_species(scores.species), mean.numbers))
        self._last_mean = mean
        return self._crystal(sample, like=x)

    @property
    def mask_token(self) -> int:
        """The value of a masked (still noisy) species in ``numbers``."""
        return int(self._species_corruption._to_non_zero_based(self._species_corruption.d3pm.dim - 1))

    def _most_likely_species(self, logits: torch.Tensor) -> torch.Tensor:
        mask_class = self._species_corruption.d3pm.dim - 1
        if logits.shape[-1] > mask_class:
            logits = logits[..., :mask_class]
        return self._species_corruption._to_non_zero_based(torch.argmax(logits, dim=-1))

    def last_mean(self) -> CrystalBatch | None:
        return self._last_mean

    # ------------------------------------------------------------------ noise process algebra
    def _limit(self, x: CrystalBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Limit mean ``(S, 3, 3)`` and element-wise limit variance ``(S, 3, 3)`` of the lattice."""
        graph = self._graph(x)
        return (self._cell_sde.get_limit_mean(x=x.cell, batch=graph),
                self._cell_sde.get_limit_var(x=x.cell, batch=graph))

    def marginal(self, field: str, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, device=self.device).reshape(-1).expand(len(self.num_atoms))
        if field == "positions":
            graph = self._template
            _, std = self._pos_sde.marginal_prob(x=torch.ones(len(self._batch_idx[_POS]), 3, device=self.device),
                                                 t=t, batch_idx=self._batch_idx[_POS], batch=graph)
            return torch.ones_like(std[:, :1]), std[:, :1]
        if field == "lattice":
            alpha = self._cell_sde._marginal_mean_coeff(t)[:, None, None]
            limit_var = self._cell_sde.limit_var_scaling_constant * self.num_atoms.to(alpha.dtype) ** (2.0 / 3.0)
            sigma = torch.sqrt((1.0 - alpha**2) * limit_var[:, None, None])
            return alpha, sigma
        raise ValueError(f"no continuous field {field!r}; fields are 'positions' and 'lattice'")

    def tweedie(self, x: CrystalBatch, t: torch.Tensor, scores: Scores) -> CrystalBatch:
        _, sigma_pos = self.marginal("positions", t)
        frac0 = wrap_fractional(x.frac + sigma_pos**2 * scores.positions)
        alpha, sigma_cell = self.marginal("lattice", t)
        limit_mean, _ = self._limit(x)
        cell0 = (x.cell - (1.0 - alpha) * limit_mean + sigma_cell**2 * scores.lattice) / alpha
        numbers = x.numbers if scores.species is None else self._most_likely_species(scores.species)
        return CrystalBatch(frac=frac0, cell=cell0, numbers=numbers, num_atoms=x.num_atoms, _batch=x._batch)

    def score_shift(self, x: CrystalBatch, t: torch.Tensor, field: str, delta: torch.Tensor) -> torch.Tensor:
        alpha, sigma = self.marginal(field, t)
        return alpha / sigma**2 * delta

    def renoise(self, x: CrystalBatch, s: torch.Tensor, t: torch.Tensor) -> CrystalBatch:
        _, sigma_s = self.marginal("positions", s)
        _, sigma_t = self.marginal("positions", t)
        step = torch.sqrt(torch.clamp(sigma_t**2 - sigma_s**2, min=0.0))
        alpha_s, _ = self.marginal("lattice", s)
        alpha_t, _ = self.marginal("lattice", t)
        return self._forward(x, step, alpha_t / alpha_s, self.species_keep_probability(s, t))

    def noise(self, x0: CrystalBatch, t: torch.Tensor) -> CrystalBatch:
        """Exact ``q(x_t | x_0)`` of MatterGen's training corruption.

        Positions: ``wrap(x0 + sigma_t eps)`` with the full marginal ``sigma_t`` (which
        is ``sigma_min``, not 0, at ``t = 0``); lattice: ``alpha_t L0 + (1 - alpha_t)
        mu(N) + sqrt((1 - alpha_t^2) v(N)) eps`` with symmetric noise, ``mu`` and ``v``
        the limit mean and variance of a structure of ``N`` atoms; species: each token
        kept with the absorbing D3PM's survival probability after ``k(t)`` steps, else
        the mask token (:attr:`mask_token`).
        """
        _, sigma_t = self.marginal("positions", t)
        alpha_t, _ = self.marginal("lattice", t)
        return self._forward(x0, sigma_t, alpha_t, self._species_survival(t))

    def _forward(self, x: CrystalBatch, step: torch.Tensor, ratio: torch.Tensor, keep: torch.Tensor) -> CrystalBatch:
        """Gaussian/absorbing forward moves: positions step std, lattice mean ratio, species keep probability."""
        from mattergen.common.diffusion.corruption import make_noise_symmetric_preserve_variance

        frac = wrap_fractional(x.frac + step * torch.randn_like(x.frac))
        limit_mean, limit_var = self._limit(x)
        noise = make_noise_symmetric_preserve_variance(torch.randn_like(x.cell))
        cell = ratio * x.cell + (1.0 - ratio) * limit_mean + torch.sqrt((1.0 - ratio**2) * limit_var) * noise
        numbers = self._mask_species(x.numbers, keep)
        return CrystalBatch(frac=frac, cell=cell, numbers=numbers, num_atoms=x.num_atoms, _batch=x._batch)

    def _species_survival(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a clean species token is still unmasked at time ``t`` (``q(x_t | x_0)``)."""
        from mattergen.diffusion.discrete_time import to_discrete_time

        survive = self._species_corruption.d3pm.state.to(self.device)
        n = self._species_corruption.N
        index = to_discrete_time(torch.as_tensor(t, device=self.device), N=n, T=self.t_max) + 1
        return survive[index.clamp(min=0, max=n)]

    def species_keep_probability(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability that an unmasked species token survives from time ``s`` to ``t``."""
        from mattergen.diffusion.discrete_time import to_discrete_time

        d3pm = self._species_corruption.d3pm
        survive = d3pm.state.to(self.device)  # survive[k]: unmasked after k forward steps
        n = self._species_corruption.N
        index_s = to_discrete_time(torch.as_tensor(s, device=self.device), N=n, T=self.t_max) + 1
        index_t = to_discrete_time(torch.as_tensor(t, device=self.device), N=n, T=self.t_max) + 1
        numerator = survive[index_t.clamp(max=n)]
        denominator = survive[index_s.clamp(max=n)]
        return torch.where(denominator > 0, numerator / denominator.clamp(min=1e-30),
                           torch.zeros_like(numerator))

    def _mask_species(self, numbers: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        keep = keep.reshape(-1)
        keep_atom = keep.expand(len(self.num_atoms))[self._batch_idx[_SPECIES]]
        masked = torch.rand(numbers.shape, device=self.device) >= keep_atom
        return torch.where(masked, torch.full_like(numbers, self.mask_token), numbers)

    def to_atoms(self, x: CrystalBatch):
        return x.to_atoms()
