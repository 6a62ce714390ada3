"""GRACE (tensorpotential, on TensorFlow): model folders and names, and its ASE calculator.

GRACE validates (energies of generated and reference structures with the same potential);
it cannot drive guidance: TensorFlow gradients do not flow into torch's autograd.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any

import torch
from ase.calculators.calculator import Calculator

from aseguide.potentials.base import _import_error

__all__ = ["GRACE_DEFAULT_MODEL", "GRACE_CALCULATOR_DEFAULTS", "grace_calculator", "grace_model_path"]


#: Default GRACE model: the one the paper validates with.
GRACE_DEFAULT_MODEL = "GRACE-2L-OMAT-large-ft-AM"

#: Options of tensorpotential's ``grace_fm`` for foundation models, used for local folders too
#: (padding of the XLA-compiled shapes; uncertainty quantification off, as it slows the model).
GRACE_CALCULATOR_DEFAULTS: dict[str, Any] = {
    "pad_neighbors_fraction": 0.05,
    "pad_atoms_number": 10,
    "max_number_reduction_recompilation": 2,
    "enable_uq_if_available": False,
}


def _import_tensorpotential() -> Any:
    """Import tensorpotential (its start-up notes go to stderr, not stdout)."""
    # tensorpotential sets this itself (tf.keras must be Keras 2, i.e. tf_keras) and
    # prints a note when it has to; setting it first keeps stdout clean
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import tensorpotential.calculator.asecalculator  # noqa: F401
            import tensorpotential.calculator.foundation_models as foundation_models
    except ImportError as exc:
        raise _import_error("grace", exc) from exc
    return foundation_models


def _tf_device(device: str | torch.device | None) -> str | None:
    """TensorFlow device string for a torch-style device (``None``: TensorFlow's own choice).

    ``None``/``"auto"`` lets TensorFlow place the model (a visible GPU first, as torch
    potentials pick CUDA when available); ``"cpu"``; ``"cuda"``/``"cuda:K"``/``"gpu:K"``.
    """
    if device is None or str(device) == "auto":
        return None
    kind, _, index = str(device).lower().partition(":")
    if kind == "cpu":
        return "/CPU:0"
    if kind not in ("cuda", "gpu"):
        raise ValueError(f"device {device!r} is not 'cpu', 'cuda', 'cuda:K' or 'auto'")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    k = int(index or 0)
    if k >= len(gpus):
        raise RuntimeError(
            f"device {device!r} requested for GRACE, but TensorFlow sees {len(gpus)} GPU(s) "
            f"(tensorflow {tf.__version__}; install.sh installs the CPU build tensorflow-cpu: install "
            "'tensorflow[and-cuda]' of the same version for a GPU)"
        )
    return f"/GPU:{k}"


@functools.cache
def _grace_calculator_class() -> type:
    """tensorpotential's ``TPCalculator``, pinned to a TensorFlow device (class built on first use)."""
    _import_tensorpotential()
    from tensorpotential.calculator.asecalculator import TPCalculator

    class GraceCalculator(TPCalculator):
        """tensorpotential's ``TPCalculator`` whose model is loaded and run on ``tf_device``.

        ``tf_device=None`` leaves the placement to TensorFlow. ``model_path`` is the
        SavedModel folder that was loaded.
        """

        def __init__(self, model: str, *, tf_device: str | None = None, **kwargs: Any) -> None:
            self.tf_device = tf_device
            self.model_path = str(model)
            with self._device_scope():
                super().__init__(model=str(model), **kwargs)

        def _device_scope(self):
            if self.tf_device is None:
                return contextlib.nullcontext()
            import tensorflow as tf

            return tf.device(self.tf_device)

        def calculate(self, *args: Any, **kwargs: Any) -> None:
            with self._device_scope():
                super().calculate(*args, **kwargs)

    return GraceCalculator


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def grace_model_path(model: str | os.PathLike | None = None) -> Path:
    """The local SavedModel folder of a GRACE model name or folder.

    Parameters
    ----------
    model:
        A GRACE foundation model name known to tensorpotential (default
        ``"GRACE-2L-OMAT-large-ft-AM"``, the paper's; old and short aliases are
        accepted), fetched by tensorpotential into its cache (``$GRACE_CACHE``, default
        ``~/.cache/grace``) on first use; or the path of a model folder as
        tensorpotential writes it (``saved_model.pb``, ``variables/``,
        ``metadata.yaml``: a downloaded foundation model or your own fit).

    Returns
    -------
    pathlib.Path
        The folder to load.

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        For a folder without ``saved_model.pb``, or a name that is neither a folder nor
        a model tensorpotential knows (the known names are listed).
    RuntimeError
        When a named model is not cached and cannot be downloaded (offline).
    ImportError
        When tensorpotential is not installed.
    """
    model = GRACE_DEFAULT_MODEL if model is None else model
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists() or isinstance(model, os.PathLike) or _looks_like_path(text):
        if not path.exists():
            raise FileNotFoundError(f"no such GRACE model folder: {text!r}")
        if not (path / "saved_model.pb").is_file():
            raise ValueError(f"{text!r} is not a GRACE model folder (no saved_model.pb): give the folder of a "
                             "model saved by tensorpotential (gracemaker's saved_model, or a downloaded one)")
        return path
    fm = _import_tensorpotential()
    name = fm.MODELS_ALIASES_DICT.get(text) or text
    if name not in fm.MODELS_NAME_LIST:
        raise ValueError(f"unknown GRACE model {text!r} (and no such folder): choose a model folder or one of "
                         f"{', '.join(fm.MODELS_NAME_LIST)}")
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return Path(fm.get_or_download_model(name))
    except Exception as exc:  # noqa: BLE001 - network errors of any kind: say what to do
        cache = os.path.join(fm.FOUNDATION_CACHE_DIR, name)
        raise RuntimeError(
            f"GRACE model {name!r} is not in tensorpotential's cache ({cache}) and could not be downloaded "
            f"({type(exc).__name__}: {exc}). On a machine with internet run `grace_models download {name}` and "
            f"copy the folder to {cache} (or set GRACE_CACHE), or pass the folder itself as model="
        ) from exc


def grace_calculator(
    model: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any
) -> Calculator:
    """tensorpotential's ASE calculator for a GRACE model, on a TensorFlow device.

    Parameters
    ----------
    model : str or os.PathLike, optional
        A model name or folder (see :func:`grace_model_path`).
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:K"``; ``None``: TensorFlow's own choice.
    **kwargs
        Options of ``TPCalculator`` (:data:`GRACE_CALCULATOR_DEFAULTS` unless given).
    """
    path = grace_model_path(model)
    options = {**GRACE_CALCULATOR_DEFAULTS, **kwargs}
    return _grace_calculator_class()(str(path), tf_device=_tf_device(device), **options)
