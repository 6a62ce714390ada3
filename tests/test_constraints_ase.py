"""Objectives as ASE soft restraints: protocol, finite differences, relaxation, .traj files."""

from __future__ import annotations

import contextlib
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.io import read
from ase.io.trajectory import Trajectory
from ase.optimize import BFGS

from aseguide.constraints import (
    Combined,
    Coordination,
    CoordinationDistribution,
    MinDistance,
    Volume,
    VolumePerAtom,
    energy_forces_stress,
)

try:  # optional: FrechetCellFilter's tiny LAPACK calls suffer from BLAS threads on busy machines
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

REPO = Path(__file__).parents[1]


@pytest.fixture(autouse=True)
def single_thread():
    """ASE calls the restraint on one small structure at a time: threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1) if threadpool_limits is not None else contextlib.nullcontext():
        yield
    torch.set_num_threads(threads)


def distorted_copper():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.1, seed=1)
    atoms.set_cell(atoms.cell.array + np.random.default_rng(0).normal(0, 0.1, (3, 3)), scale_atoms=True)
    return atoms


RESTRAINTS = [
    Coordination("Cu", "Cu", target=6, cutoff=2.7, strength=1.5),
    CoordinationDistribution("Cu", "Cu", {6: 1.0}, cutoff=2.7, strength=0.7),
    MinDistance(2.6, strength=3.0),
    Combined([VolumePerAtom(15.0), Coordination("Cu", "Cu", target=6, cutoff=2.7)], strength=0.2),
]


@pytest.mark.parametrize("restraint", RESTRAINTS, ids=lambda o: o.name)
def test_restraint_adds_strength_times_loss_forces_and_stress(restraint):
    atoms = distorted_copper()
    atoms.calc = EMT()
    plain_energy = atoms.get_potential_energy(apply_constraint=False)
    plain_forces = atoms.get_forces(apply_constraint=False)
    plain_stress = atoms.get_stress(apply_constraint=False)
    loss, loss_forces, loss_stress = energy_forces_stress(restraint, atoms)
    assert float(loss[0]) > 1e-3
    atoms.set_constraint(restraint)
    assert atoms.get_potential_energy() == pytest.approx(plain_energy + restraint.strength * float(loss[0]))
    assert atoms.get_forces() == pytest.approx(plain_forces + restraint.strength * loss_forces.numpy())
    assert atoms.get_stress() == pytest.approx(plain_stress + restraint.strength * loss_stress[0].numpy())
    assert atoms.get_stress(voigt=False).shape == (3, 3)


@pytest.mark.parametrize("restraint", RESTRAINTS, ids=lambda o: o.name)
def test_restrained_energy_agrees_with_forces_and_stress_by_finite_differences(restraint):
    atoms = distorted_copper()
    atoms.set_constraint(restraint)
    atoms.calc = EMT()
    assert atoms.get_forces() == pytest.approx(calculate_numerical_forces(atoms, eps=1e-5), abs=1e-6)
    assert atoms.get_stress() == pytest.approx(calculate_numerical_stress(atoms, eps=1e-6), abs=1e-6)


def test_protocol_odds_and_ends():
    restraint = Coordination("Cu", "Cu", target=6, cutoff=2.7)
    atoms = distorted_copper()
    atoms.set_constraint([FixAtoms(indices=[0]), restraint])
    positions = atoms.get_positions()
    atoms.set_positions(positions + 0.1)
    assert atoms.get_positions()[1:] == pytest.approx(positions[1:] + 0.1)  # only FixAtoms acts
    assert restraint.get_removed_dof(atoms) == 0
    assert atoms.get_number_of_degrees_of_freedom() == 3 * len(atoms) - 3
    subset = atoms[[1, 2]]
    assert restraint in subset.constraints
    copied = atoms.copy()
    assert copied.constraints[1] == restraint and copied.constraints[1] is not restraint
    assert copy.deepcopy(atoms).constraints[1] == restraint
    repeated = atoms.repeat((2, 1, 1))
    assert repeated.constraints[1] == restraint
    assert restraint.todict()["name"] == "Coordination"


def test_relaxation_moves_coordination_towards_target():
    target = 6.0
    finals = {}
    for strength in (0.0, 2.0):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=1)
        restraint = Coordination("Cu", "Cu", target=target, cutoff=2.7, strength=strength)
        atoms.set_constraint(restraint)
        atoms.calc = EMT()
        BFGS(FrechetCellFilter(atoms), logfile=None).run(fmax=0.01, steps=40)
        finals[strength] = float(restraint.descriptor(atoms)[0])
    # unrestrained fcc Cu keeps ~10 soft neighbours within 2.7 Å; the restraint pulls towards 6
    assert finals[0.0] > 9.5
    assert finals[2.0] < finals[0.0] - 2.0
    assert abs(finals[2.0] - target) < abs(finals[0.0] - target)


def test_trajectory_with_restraints_is_readable(tmp_path):
    restraints = [Coordination("Cu", "Cu", target=6, cutoff=2.7, strength=1.5),
                  Combined([Volume(45.0), MinDistance(2.0)], weights=[1.0, 3.0])]
    atoms = distorted_copper()
    atoms.set_constraint([FixAtoms(indices=[2]), *restraints])
    atoms.calc = EMT()
    path = tmp_path / "relax.traj"
    optimizer = BFGS(FrechetCellFilter(atoms), logfile=None, trajectory=str(path))
    optimizer.run(fmax=0.05, steps=3)
    frames = read(path, index=":")
    assert len(frames) == 4
    assert frames[-1].constraints[1:] == restraints
    assert isinstance(frames[-1].constraints[0], FixAtoms)
    with Trajectory(path) as trajectory:
        assert trajectory[0].constraints[1] == restraints[0]
    reread = read(path)
    reread.calc = EMT()
    assert reread.get_potential_energy() == pytest.approx(atoms.get_potential_energy())


def test_trajectory_readable_in_a_new_process_that_imports_aseguide(tmp_path):
    atoms = distorted_copper()
    atoms.set_constraint(Coordination("Cu", "Cu", target=6, cutoff=2.7))
    path = tmp_path / "one.traj"
    with Trajectory(path, "w") as trajectory:
        trajectory.write(atoms)
    script = (
        "import aseguide.constraints\n"
        "from ase.io import read\n"
        f"atoms = read({str(path)!r})\n"
        "print(type(atoms.constraints[0]).__name__, atoms.constraints[0].counter.cutoffs)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.split()[0] == "Coordination"
    assert "2.7" in result.stdout


def _ase_plugin_path(tmp_path: Path) -> list[str]:
    """sys.path entries under which ASE finds aseguide's ``ase.ioformats`` entry point.

    The declaration is read from setup.cfg; when the installed aseguide metadata does
    not declare it yet (an editable install made before it was added), a dist-info
    folder holding exactly that declaration is written under ``tmp_path``.
    """
    import configparser
    from importlib.metadata import entry_points

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    declared = [line.strip() for line in config["options.entry_points"]["ase.ioformats"].splitlines() if line.strip()]
    assert declared == ["aseguide-run = aseguide_ase:aseguide_run"]
    if any(e.value == "aseguide_ase:aseguide_run" for e in entry_points(group="ase.ioformats")):
        return [str(REPO)]
    info = tmp_path / "site" / "aseguide_ase_entry_point-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: aseguide-ase-entry-point\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[ase.ioformats]\n" + "\n".join(declared) + "\n")
    return [str(tmp_path / "site"), str(REPO)]


def test_plain_ase_read_in_a_fresh_process_that_never_imported_aseguide(tmp_path):
    import os

    restraints = [Coordination("Cu", "Cu", target=6, cutoff=2.7, strength=1.5),
                  Combined([Volume(45.0), MinDistance(2.0)], weights=[1.0, 3.0])]
    atoms = distorted_copper()
    atoms.set_constraint([FixAtoms(indices=[2]), *restraints])
    path = tmp_path / "restrained.traj"
    with Trajectory(path, "w") as trajectory:
        trajectory.write(atoms)
    script = (
        "import json, sys\n"
        "import ase.io\n"
        "assert 'aseguide' not in sys.modules and 'torch' not in sys.modules, 'import ase.io must stay light'\n"
        f"atoms = ase.io.read({str(path)!r})\n"
        "print(json.dumps([c.todict() for c in atoms.constraints]))\n"
        "print(' '.join(type(c).__module__ + '.' + type(c).__name__ for c in atoms.constraints))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(_ase_plugin_path(tmp_path))}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    dicts, classes = result.stdout.splitlines()[-2:]
    assert json.loads(dicts)[1:] == json.loads(json.dumps([r.todict() for r in restraints]))
    assert classes.split()[1:] == ["aseguide.constraints.coordination.Coordination",
                                   "aseguide.constraints.combined.Combined"]


def test_aseguide_run_io_format(tmp_path):
    from ase.io import write

    import aseguide_ase

    run = tmp_path / "run"
    run.mkdir()
    write(run / "structures.extxyz", [bulk("Cu"), bulk("Si")])
    images = list(aseguide_ase.read_aseguide_run(str(run), slice(None)))
    assert [a.get_chemical_formula() for a in images] == ["Cu", "Si2"]
