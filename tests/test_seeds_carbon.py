"""Seeds on a real model: the shipped ``carbon-24-small`` (issue 17).

Variants of a seed crystal must get closer to it as ``start_time`` shrinks, and guidance
toward a volume target combined with a seed must move the volume while the structures
stay closer to the seed than unseeded guided samples. "Closer" is the cosine distance
``1 - F_seed . F`` of the Valle-Oganov RDF fingerprints
(:func:`aseguide.analysis.rdf_fingerprints`, no structure matcher), averaged over the
samples; guided structures are compared at the seed's density (scaled), since guidance
changes the density on purpose.

The tests skip with the reason when ``aseguide/data/models/carbon-24-small`` is absent. ``ASEGUIDE_TEST_CARBON_MODEL=<checkpoint
folder>`` runs them against another carbon checkpoint (to check that they run; the
thresholds are meant for a trained model).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase.build import bulk

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

#: Samples per start time (12 structures of 8 atoms: a batch the CPU takes in well under a second a step).
SAMPLES = 12
#: A shorter schedule than the model's 250 steps (the seeded runs take a fraction of it).
STEPS = 100


@pytest.fixture(scope="module")
def carbon_model():
    from aseguide import load_model
    from aseguide.models.registry import packaged_models

    path = os.environ.get("ASEGUIDE_TEST_CARBON_MODEL")
    if path:
        return load_model(path, device="cpu")
    if "carbon-24-small" not in packaged_models():
        pytest.skip("carbon-24-small is not packaged in this checkout (aseguide/data/models/carbon-24-small)")
    return load_model("carbon-24-small", device="cpu")


def _at_density_of(seed, structures) -> list:
    """Every structure scaled (atoms with the cell) to the seed's volume per atom."""
    scaled = []
    for atoms in structures:
        atoms = atoms.copy()
        ratio = seed.get_volume() / len(seed) / (atoms.get_volume() / len(atoms))
        if np.isfinite(ratio) and ratio > 0:
            atoms.set_cell(atoms.cell.array * ratio ** (1.0 / 3.0), scale_atoms=True)
        scaled.append(atoms)
    return scaled


def _distances(seed, structures) -> np.ndarray:
    """Cosine fingerprint distance of every structure to the seed (non-finite structures: 1, the largest)."""
    from aseguide.analysis import rdf_fingerprints, similarity_matrix

    finite = [bool(np.isfinite(a.positions).all() and np.isfinite(a.cell.array).all()
                   and a.get_volume() / len(a) < 100.0) for a in structures]
    kept = [a for a, ok in zip(structures, finite) if ok]
    out = np.ones(len(structures))
    if kept:
        species = sorted({int(z) for a in [seed, *kept] for z in a.numbers})  # unconditioned: other elements occur
        fp = rdf_fingerprints([seed, *kept], species=species, r_max=6.0)
        similarity = similarity_matrix(fp)[0, 1:]
        out[np.flatnonzero(finite)] = 1.0 - np.clip(similarity, -1.0, 1.0)
    return out


def _run(model, objective=None, **kwargs):
    from aseguide.sampling.dynamics import GuidedDiffusion

    opt = GuidedDiffusion(model, objective, steps=STEPS, seed=0, **kwargs)
    opt.run()
    return opt.get_structures()


def test_variants_get_closer_to_the_seed_as_start_time_shrinks(carbon_model):
    seed = bulk("C", "diamond", a=3.567, cubic=True)                 # 8 atoms
    mean = [float(_distances(seed, _run(carbon_model, seeds=[seed], start_time=t0,
                                        samples_per_seed=SAMPLES)).mean())
            for t0 in (0.6, 0.3, 0.1)]
    assert mean[0] > mean[1] > mean[2], mean


def test_guidance_with_a_seed_moves_the_volume_and_stays_near_the_seed(carbon_model):
    from aseguide.constraints import VolumePerAtom

    seed = bulk("C", "diamond", a=3.567, cubic=True)                 # 5.67 Å3/atom
    target = VolumePerAtom(target=9.0)
    guidance = dict(backward_strength=0.2, recurrence=1, start=0.0)
    seeded_free = _run(carbon_model, seeds=[seed], start_time=0.3, samples_per_seed=SAMPLES)
    seeded_guided = _run(carbon_model, target, seeds=[seed], start_time=0.3, samples_per_seed=SAMPLES, **guidance)
    unseeded_guided = _run(carbon_model, target, batch_size=SAMPLES, num_atoms=8, **guidance)

    def volume(structures):
        return float(np.median([a.get_volume() / len(a) for a in structures]))

    assert abs(volume(seeded_guided) - 9.0) < abs(volume(seeded_free) - 9.0)
    # "closer to the seed" in structure, at equal density: guidance changed the density on purpose,
    # and an RDF fingerprint compared at different densities measures mostly the scale
    near = _distances(seed, _at_density_of(seed, seeded_guided)).mean()
    assert near < _distances(seed, _at_density_of(seed, unseeded_guided)).mean()
