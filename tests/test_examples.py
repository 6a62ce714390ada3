"""The paper's five case studies in examples/: configurations match the paper, scripts run.

Each ``examples/<case>/run.py`` is smoke-tested offline with the tiny random conditioned
model, 2 diffusion steps and 2 structures per run; the configurations themselves are
checked against the paper's settings (chemical systems, targets, cutoffs, guidance).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml
from ase.data import atomic_numbers, covalent_radii
from ase.io import read
from conftest import shared_data

from aseguide.generate import GenerateConfig, build_objective
from aseguide.state import CrystalBatch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: case folder -> (chemical system, {guided config: [(objective type, settings)]}) from the paper.
CASES = {
    "boron": ("B", {"config.yaml": [("VolumePerAtom", {"target": 7.0})]}),
    "fe_nd_b": ("Fe-Nd-B", {"config.yaml": [("Coordination", {"center": "B", "neighbor": "Fe", "target": 6})]}),
    "li_co_o": ("Li-Co-O", {"config.yaml": [("Coordination", {"center": "Co", "neighbor": "O", "target": 4})]}),
    "cu_si_p": ("Cu-Si-P", {f"config_cn{n}.yaml": [("Coordination", {"center": "Cu", "neighbor": "P", "target": n})]
                            for n in (3, 4, 6)}),
    "cu_si_p_ca": ("Cu-Si-P-Ca", {"config.yaml": [
        ("Coordination", {"center": "Cu", "neighbor": "P", "target": 4}),
        ("Coordination", {"center": "Cu", "neighbor": "Cu", "target": 1})]}),
}
#: The paper's common settings (batch of 1000, N = 1000, CFG 2.0, g = k = 0.01, m = 2, K = 3, t < 0.9).
PAPER = {"model": "chemical_system", "num_structures": 1000, "steps": 1000, "guidance_factor": 2.0,
         "num_atoms": "ALEX_MP_20"}
PAPER_GUIDANCE = {"forward_strength": 0.01, "backward_strength": 0.01, "backward_steps": 2, "recurrence": 3,
                  "normalize": True, "start": 0.1}
GUIDANCE_ONLY = {"objectives", "combine", "guidance", "output"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _radii_sum(a: str, b: str) -> float:
    return covalent_radii[atomic_numbers[a]] + covalent_radii[atomic_numbers[b]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_configurations_follow_the_paper(case):
    system, guided = CASES[case]
    folder = EXAMPLES / case
    assert (folder / "run.py").is_file()
    unguided = _yaml(folder / "unguided.yaml")
    assert unguided["objectives"] == [] and "guidance" not in unguided
    for name, expected in guided.items():
        data = _yaml(folder / name)
        GenerateConfig.from_dict(data)  # valid
        assert set(data["chemical_system"].split("-")) == set(system.split("-"))
        assert {k: data[k] for k in PAPER} == PAPER
        assert data["guidance"] == PAPER_GUIDANCE
        # the unguided twin differs only in what guides
        assert {k: v for k, v in data.items() if k not in GUIDANCE_ONLY} == \
               {k: v for k, v in unguided.items() if k not in GUIDANCE_ONLY}
        targets = [o for o in data["objectives"] if o["type"] != "MinDistance"]
        assert [(o["type"], {k: o[k] for k in settings}) for o, (_, settings) in zip(targets, expected)] == expected
        assert len(targets) == len(expected)
        for objective in targets:
            if objective["type"] == "Coordination":  # the authors' cutoff: covalent radii + 0.5 Å
                assert objective["cutoff"] == pytest.approx(
                    _radii_sum(objective["center"], objective["neighbor"]) + 0.5, abs=0.006)
        repulsion = [o for o in data["objectives"] if o["type"] == "MinDistance"]
        if targets[0]["type"] == "Coordination":  # every pair of the system, 0.75 x covalent radii
            assert len(repulsion) == 1 and data["combine"] == {"norm": 2}
            elements = system.split("-")
            rows = repulsion[0]["r_min"]
            assert {frozenset(row[:2]) for row in rows} == {frozenset((a, b)) for a in elements for b in elements}
            assert len(rows) == len(elements) * (len(elements) + 1) // 2
            for a, b, r in rows:
                assert r == pytest.approx(0.75 * _radii_sum(a, b), abs=0.006)
        else:
            assert not repulsion


@pytest.mark.parametrize("case, cif, on_target", [
    ("fe_nd_b", "Nd2Fe14B_reconstructed_Herbst1984.cif", True),  # B in [BFe6] prisms
    ("li_co_o", "LiCoO2_R-3m_primitive_from_tchen0965_structural_descriptors_repo.cif", False),  # CoO6, not 4
])
def test_guided_objectives_on_known_structures(case, cif, on_target):
    """The motif the paper aims at meets the coordination target, and the repulsion
    leaves real crystals alone (no contact below its r_min)."""
    atoms = read(shared_data("structures", cif))
    config = GenerateConfig.from_file(EXAMPLES / case / "config.yaml")
    coordination, repulsion = build_objective(config.objectives, config.combine).objectives
    assert bool(coordination.satisfied(atoms)[0]) is on_target
    assert bool(repulsion.satisfied(atoms)[0])
    assert float(repulsion.loss(CrystalBatch.from_atoms([atoms]))[0]) == 0.0


def test_co_o_cutoff_is_the_papers():
    objective = _yaml(EXAMPLES / "li_co_o" / "config.yaml")["objectives"][0]
    assert objective["cutoff"] == 2.42


def _load_script(case: str):
    spec = importlib.util.spec_from_file_location(f"example_{case}", EXAMPLES / case / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_study_script_runs_offline(case, tmp_path, tiny_conditioned_model_dir, one_thread):
    out = tmp_path / case
    paths = _load_script(case).main(["--model", str(tiny_conditioned_model_dir), "--steps", "2",
                                     "--num-structures", "2", "--batch-size", "2", "--output", str(out)])
    guided = CASES[case][1]
    names = ["guided"] if len(guided) == 1 else [Path(n).stem.removeprefix("config_") for n in guided]
    for name in ["unguided", *names]:
        assert len(read(out / name / "structures.extxyz", ":")) == 2
        assert json.loads((out / name / "config.json").read_text())["steps"] == 2
    for name in names:
        report = paths["report" if len(names) == 1 else f"report_{name}"]
        summary = json.loads((report / "summary.json").read_text())
        assert summary["sets"]["guided"]["counts"]["read"] == 2
        assert summary["sets"]["unguided"]["counts"]["read"] == 2
        expected = [(s["target"], s.get("center"), s.get("neighbor")) for _, s in guided[f"config_{name}.yaml"
                    if len(names) > 1 else "config.yaml"]]
        recorded = [(o["target"], o.get("params", {}).get("center"), o.get("params", {}).get("neighbor"))
                    for o in summary["objectives"]]
        assert recorded == expected
        assert set(summary["tests"]) == {o["name"] for o in summary["objectives"]} | (
            {"all"} if len(expected) > 1 else set())  # guided vs unguided z-tests, each target and jointly


@pytest.mark.parametrize("case", sorted(CASES) + ["carbon"])
def test_case_study_script_errors_are_clean_messages(case, tmp_path):
    import os
    import subprocess
    import sys

    missing = tmp_path / "no_such_model"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(EXAMPLES / case / "run.py"), "--model", str(missing), "--steps",
                             "1", "--num-structures", "1", "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"run.py: error: unknown model {str(missing)!r}" in result.stderr
    assert not (tmp_path / "out").exists()
