"""Models shipped inside the aseguide package (offline, no download).

A packaged model lives in ``aseguide/data/models/<name>/`` in MatterGen's checkpoint
layout (``config.yaml`` + ``checkpoints/last.ckpt``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["packaged_model_path", "packaged_models", "PACKAGED_MODELS_DIR"]

PACKAGED_MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


def packaged_models() -> list[str]:
    """Names of the models shipped with this installation."""
    if not PACKAGED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in PACKAGED_MODELS_DIR.iterdir() if (p / "config.yaml").is_file())


def packaged_model_path(name: str) -> Path | None:
    """Directory of the packaged model ``name``, or ``None`` when there is none."""
    path = PACKAGED_MODELS_DIR / name
    return path if (path / "config.yaml").is_file() else None
