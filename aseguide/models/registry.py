"""Models shipped inside the aseguide package (offline, no download).

A packaged model lives in ``aseguide/data/models/<name>/`` in MatterGen's checkpoint
layout (``config.yaml`` + ``checkpoints/last.ckpt``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["packaged_model_path", "packaged_models", "PACKAGED_MODELS_DIR", "RANDOM_MODELS"]

#: Randomly initialised tiny models built on first use in the user's cache folder: they
#: exercise the whole pipeline offline but generate no physical crystals.
RANDOM_MODELS = {"tiny-random": False, "tiny-random-chemical-system": True}

PACKAGED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


def packaged_models() -> list[str]:
    """Names of the models shipped with this installation."""
    if not PACKAGED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in PACKAGED_MODELS_DIR.iterdir() if (p / "config.yaml").is_file())


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aseguide" / "models"


def packaged_model_path(name: str) -> Path | None:
    """Directory of the packaged (or on-demand random) model ``name``, or ``None``."""
    path = PACKAGED_MODELS_DIR / name
    if (path / "config.yaml").is_file():
        return path
    if name in RANDOM_MODELS:
        from aseguide.models.tiny import make_tiny_model

        target = _cache_dir() / name
        if not (target / "checkpoints" / "last.ckpt").is_file():
            make_tiny_model(target, conditioned=RANDOM_MODELS[name])
        return target
    return None
