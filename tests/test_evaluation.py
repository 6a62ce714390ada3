"""Evaluation metrics of a generative model against held-out carbon data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import shared_data

from aseguide.training.evaluation import evaluate_model, load_held_out


@pytest.fixture(scope="module")
def held_out():
    from aseguide.training.data import atoms_from_cif, read_dataset

    table = read_dataset([shared_data("carbon_24", "test.csv")]).iloc[::100]  # 21 structures
    return [atoms_from_cif(cif) for cif in table["cif"]]


def _perturbed(structures, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.set_cell(atoms.cell * 1.15, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.25, size=atoms.positions.shape)
        out.append(atoms)
    out[0].positions[1] = out[0].positions[0] + [0.6, 0.0, 0.0]  # one short contact
    return out


def test_against_itself_gives_trivial_values(held_out, tmp_path):
    metrics = evaluate_model(held_out, held_out, tmp_path, calculator=None)
    assert metrics["volume_per_atom"]["wasserstein"] == 0.0
    assert metrics["coordination"]["wasserstein"] == 0.0
    screen, sg = metrics["short_distance_screen"], metrics["spacegroup"]
    assert screen["generated"] == screen["reference"] == 1.0
    assert sg["above_P1_generated"] == sg["above_P1_reference"] > 0.5
    for k in (3, 4):
        assert metrics["coordination"][f"fraction_{k}_generated"] == metrics["coordination"][f"fraction_{k}_reference"]
    assert json.loads((tmp_path / "metrics.json").read_text())["n_generated"] == len(held_out)
    for name in ("volume_per_atom.png", "coordination.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert "energy_per_atom" not in metrics


def test_perturbed_set_differs(held_out):
    metrics = evaluate_model(_perturbed(held_out), held_out, calculator=None)
    vpa = metrics["volume_per_atom"]
    assert vpa["wasserstein"] > 0.5 and vpa["median_generated"] > vpa["median_reference"]
    assert metrics["coordination"]["wasserstein"] > 0.1
    assert metrics["short_distance_screen"]["generated"] < 1.0
    assert metrics["spacegroup"]["above_P1_generated"] < metrics["spacegroup"]["above_P1_reference"]


def test_energies_with_a_calculator(held_out):
    from ase.calculators.emt import EMT

    small = held_out[:3]
    metrics = evaluate_model(small, small, calculator=EMT())
    energy = metrics["energy_per_atom"]
    assert energy["wasserstein"] == 0.0 and np.isfinite(energy["median_generated"])
    shifted = evaluate_model(_perturbed(small), small, calculator=EMT())["energy_per_atom"]
    assert shifted["wasserstein"] > 0.0


def test_held_out_set_from_split_file(tmp_path):
    from aseguide.training.data import read_dataset, split_indices

    data = [str(shared_data("carbon_24", "val.csv"))]
    table = read_dataset(data)
    train_rows, held_rows = split_indices(len(table), 5, seed=3)
    (tmp_path / "split.json").write_text(json.dumps({
        "data": data, "held_out_rows": held_rows.tolist(),
        "held_out_ids": table["material_id"].iloc[held_rows].tolist()}))
    structures = load_held_out(tmp_path)
    assert [a.info["material_id"] for a in structures] == table["material_id"].iloc[held_rows].tolist()
    assert all(np.isfinite(a.info["energy_per_atom"]) for a in structures)


def test_foreign_elements_are_not_valid(held_out):
    with_silicon = [a.copy() for a in held_out]
    with_silicon[2].numbers[0] = 14  # no short contact, but not carbon alone
    metrics = evaluate_model(with_silicon, held_out, calculator=None)
    n = len(held_out)
    assert metrics["short_distance_screen"]["generated"] == 1.0
    assert metrics["only_element"] == {"generated": (n - 1) / n, "reference": 1.0}
    assert metrics["valid"]["generated"] == (n - 1) / n and metrics["valid"]["reference"] == 1.0
    perturbed = _perturbed(with_silicon)  # structure 0 has a short contact, structure 2 silicon
    perturbed_metrics = evaluate_model(perturbed, held_out, calculator=None)
    assert perturbed_metrics["valid"]["generated"] < perturbed_metrics["short_distance_screen"]["generated"] < 1.0


def test_unknown_element_is_named(held_out):
    with pytest.raises(ValueError, match="Xx"):
        evaluate_model(held_out, held_out, element="Xx", calculator=None)


def test_empty_sets_are_rejected(held_out):
    with pytest.raises(ValueError):
        evaluate_model([], held_out, calculator=None)
