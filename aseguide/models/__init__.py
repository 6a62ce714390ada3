"""Score backends: MatterGen checkpoints and analytic test models."""

from aseguide.models.base import FIELDS, SamplingSession, ScoreBackend, Scores

__all__ = ["FIELDS", "SamplingSession", "ScoreBackend", "Scores", "load_model"]


def load_model(name_or_path, **kwargs):
    """Load a MatterGen checkpoint (see :func:`aseguide.models.mattergen.load_model`)."""
    from aseguide.models.mattergen import load_model as _load

    return _load(name_or_path, **kwargs)

