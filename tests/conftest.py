"""Shared fixtures: the tiny MatterGen models (built once per test session) and data paths."""

from __future__ import annotations

from pathlib import Path

import pytest

#: ../shared/data next to the repository (the project's public test data).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path inside ../shared/data, skipping the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (the repository's ../shared/data folder)")
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Run a test module with one torch thread (module fixtures included).

    Tests make many small tensor calls; on the shared 2-core machine two OpenMP threads
    mostly wait on each other (measured: the tiny network 12 s against 0.1 s a run).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from aseguide.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_conditioned_model_dir(tmp_path_factory) -> Path:
    from aseguide.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_cs"), conditioned=True)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from aseguide import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_conditioned_model(tiny_conditioned_model_dir):
    from aseguide import load_model

    return load_model(tiny_conditioned_model_dir, device="cpu")
