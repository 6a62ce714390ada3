"""GemNet's radius graph with pruned image search: the very graph of MatterGen's padded search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aseguide.models._mattergen_compat import prepare_mattergen
from aseguide.models.radius_graph import RADIUS_GRAPH_ENV, periodic_radius_graph, pruned_image_search

prepare_mattergen()
from mattergen.common.gemnet import gemnet  # noqa: E402
from mattergen.common.utils.data_utils import radius_graph_pbc  # noqa: E402


def _batch(seed: int, structures: int = 10, skew: float = 0.5, unwrapped: bool = False):
    generator = torch.Generator().manual_seed(seed)
    natoms = torch.randint(1, 13, (structures,), generator=generator)
    scale = torch.empty(structures, 1, 1).uniform_(2.0, 7.0, generator=generator)
    cell = torch.randn(structures, 3, 3, generator=generator) * skew + torch.eye(3) * scale
    frac = torch.rand(int(natoms.sum()), 3, generator=generator)
    if unwrapped:
        frac = frac * 2.5 - 0.7
    owner = torch.repeat_interleave(torch.arange(structures), natoms)
    return torch.einsum("ni,nij->nj", frac, cell[owner]), cell, natoms


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("cap", "max_neighbors"), [(5, 16), (10, 50), (2, 8)])
def test_same_graph_as_mattergen(seed, cap, max_neighbors):
    """Edges, their order, image offsets and counts equal MatterGen's, skewed and unwrapped cells included."""
    pos, cell, natoms = _batch(seed, skew=0.2 + 0.3 * seed, unwrapped=seed % 3 == 2)
    expected = radius_graph_pbc(pos, cell, natoms, 5.0, max_neighbors, cap)
    got = periodic_radius_graph(pos, cell, natoms, 5.0, max_neighbors, cap)
    for a, b, name in zip(expected, got, ("edge_index", "cell_offsets", "num_neighbors_image"), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert int(got[2].sum()) > 0


def test_fcc_neighbours_and_shells_against_ase():
    """First and second fcc shells (12 + 6, at 2.55 and 3.6 Å) of copper, counted like ase's neighbour list."""
    from ase.build import bulk
    from ase.neighborlist import neighbor_list

    atoms = bulk("Cu", "fcc", a=3.6) * (1, 1, 2)
    pos = torch.tensor(atoms.positions, dtype=torch.float32)
    cell = torch.tensor(atoms.cell[:], dtype=torch.float32).unsqueeze(0)
    edges, offsets, counts = periodic_radius_graph(pos, cell, torch.tensor([len(atoms)]), 3.7, 100, 10)
    assert counts.tolist() == [18 * len(atoms)]
    i, j, shift = neighbor_list("ijS", atoms, 3.7)
    ours = sorted(zip(edges[1].tolist(), edges[0].tolist(), map(tuple, offsets.long().tolist())))
    # edge (source j, target i) with offset n: pos[j] + n @ cell - pos[i]; ase: pos[j] + S @ cell - pos[i]
    assert ours == sorted(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))


def test_nearest_neighbour_cap_keeps_the_closest():
    """With a cap of 4, a diamond atom keeps its 4 bonds (1.54 Å), not the 12 second neighbours."""
    from ase.build import bulk

    atoms = bulk("C", "diamond", a=3.567)
    pos = torch.tensor(atoms.positions, dtype=torch.float32)
    cell = torch.tensor(atoms.cell[:], dtype=torch.float32).unsqueeze(0)
    edges, offsets, counts = periodic_radius_graph(pos, cell, torch.tensor([2]), 3.0, 4, 10)
    assert counts.tolist() == [8]
    vectors = pos[edges[0]] + offsets @ cell[0] - pos[edges[1]]
    np.testing.assert_allclose(vectors.norm(dim=1).numpy(), 3.567 * np.sqrt(3) / 4, rtol=1e-5)


def test_topk_per_pair_is_refused():
    pos, cell, natoms = _batch(0, structures=2)
    with pytest.raises(ValueError, match="topk_per_pair"):
        periodic_radius_graph(pos, cell, natoms, 5.0, 16, 5, topk_per_pair=torch.ones(3))


def test_context_switches_gemnet_and_restores(monkeypatch):
    original = gemnet.radius_graph_pbc
    with pruned_image_search():
        assert gemnet.radius_graph_pbc is periodic_radius_graph
        with pruned_image_search():
            assert gemnet.radius_graph_pbc is periodic_radius_graph
        assert gemnet.radius_graph_pbc is periodic_radius_graph
    assert gemnet.radius_graph_pbc is original
    with pytest.raises(RuntimeError), pruned_image_search():
        raise RuntimeError("inside")
    assert gemnet.radius_graph_pbc is original
    monkeypatch.setenv(RADIUS_GRAPH_ENV, "mattergen")
    with pruned_image_search():
        assert gemnet.radius_graph_pbc is original


def test_sampling_uses_it_and_gives_mattergen_results(tmp_path, monkeypatch):
    """A tiny MatterGen samples through the pruned search; the structures equal those of the padded search."""
    import aseguide.models.radius_graph as module
    from aseguide.models import load_model
    from aseguide.optimize import GuidedDiffusion
    from aseguide.testing import make_tiny_model

    calls = []
    real = module.periodic_radius_graph

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "periodic_radius_graph", counting)
    model = load_model(make_tiny_model(tmp_path / "tiny"))

    def sample():
        dynamics = GuidedDiffusion(model, None, num_atoms=[3, 5, 8], batch_size=3, steps=4, seed=1)
        dynamics.run()
        return dynamics.final_batch()

    pruned = sample()
    assert len(calls) >= 4
    monkeypatch.setenv(RADIUS_GRAPH_ENV, "mattergen")
    calls.clear()
    padded = sample()
    assert calls == []
    torch.testing.assert_close(pruned.frac, padded.frac, rtol=0, atol=1e-6)
    torch.testing.assert_close(pruned.cell, padded.cell, rtol=0, atol=1e-5)
