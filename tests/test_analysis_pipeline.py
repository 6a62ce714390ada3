"""The whole pipeline (aseguide.analysis.analyze) and its report, on real structures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read, write

from aseguide.analysis import (
    HardView,
    PhaseDiagramHull,
    StructureSet,
    analyze,
    compare_settings,
    dominates,
    read_structures,
    two_proportion_ztest,
)
from aseguide.constraints import Coordination, Target, VolumePerAtom

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N = 100  # structures per carbon_24 set
needs_data = pytest.mark.skipif(not (DATA / "carbon_24").is_dir(), reason=f"shared test data not found at {DATA}")


def _check_png(path: Path) -> None:
    """A valid PNG with non-trivial content (several colours, not one flat image)."""
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05
    assert len(np.unique((rgb * 255).astype(int), axis=0)) > 20


@pytest.fixture(scope="module")
def carbon_result(tmp_path_factory):
    if not (DATA / "carbon_24").is_dir():
        pytest.skip(f"shared test data not found at {DATA}")
    guided = read_structures(DATA / "carbon_24" / "val.csv", limit=N)
    unguided = read_structures(DATA / "carbon_24" / "test.csv", limit=N)
    references = StructureSet(guided.structures[:40], label="first 40 of val")  # known: the first 40
    objectives = [HardView(Coordination("C", "C", 3, cutoff=1.8)), HardView(VolumePerAtom(6.0, tolerance=0.5))]
    result = analyze(guided, compare=unguided, references=references, objectives=objectives,
                     calculator=EMT())
    out = tmp_path_factory.mktemp("report")
    written = result.write_report(out)
    return result, out, written


@needs_data
def test_counts_decrease_along_the_pipeline(carbon_result):
    result, _, _ = carbon_result
    for label in ("guided", "unguided"):
        c = result.sets[label].counts
        assert c["read"] == N and c["unreadable"] == 0
        assert c["read"] >= c["distance_ok"] >= c["unique"] >= c["final"] >= c["with_e_above_hull"] > 0
        assert c["unique"] < c["read"]  # carbon_24 holds repeated AIRSS minima
    g = result.sets["guided"]
    # the first 40 guided structures are the references: none of them can be novel
    assert g.masks["unique"][:40].any() and not g.masks["novel"][:40].any()
    assert g.masks["novel"][40:].sum() == g.counts["novel"]
    assert result.sets["unguided"].counts["novel"] > 0


@needs_data
def test_satisfaction_and_ztests_agree_with_the_columns(carbon_result):
    result, _, _ = carbon_result
    s = result.summary
    sat = {}
    for label in ("guided", "unguided"):
        res = result.sets[label]
        cn = np.asarray(res.columns["CN(C-C)"], float)
        on_target = np.abs(cn - 3) <= 0.5  # independent recomputation of "satisfied"
        assert on_target.tolist() == res.masks["satisfied:CN(C-C)"].tolist()
        frac = s["satisfaction"]["CN(C-C)"][label]
        assert frac["k_raw"] == on_target.sum() and frac["n"] == N
        assert frac["k_clean"] == (on_target & res.masks["distance_ok"]).sum()
        sat[label] = frac
    z, p = two_proportion_ztest(sat["guided"]["k_raw"], N, sat["unguided"]["k_raw"], N)
    assert s["tests"]["CN(C-C)"]["raw"]["p_value"] == pytest.approx(p)
    assert s["tests"]["CN(C-C)"]["raw"]["significant"] == (p < 0.05)
    assert set(s["tests"]) == {"CN(C-C)", "volume_per_atom", "all"}


@needs_data
def test_energies_hull_and_pareto_fronts(carbon_result):
    result, _, _ = carbon_result
    ref = result.sets["references"]
    e_ref = np.asarray(ref.columns["energy_per_atom"])
    assert np.isfinite(e_ref).all()
    # elemental hull from the references' own energies: E_hull = E - min(E_ref)
    np.testing.assert_allclose(ref.columns["e_above_hull"], e_ref - e_ref.min(), atol=1e-9)
    g = result.sets["guided"]
    fin = g.masks["final"]
    np.testing.assert_allclose(np.asarray(g.columns["e_above_hull"])[fin],
                               np.asarray(g.columns["energy_per_atom"])[fin] - e_ref.min(), atol=1e-9)
    assert np.isnan(np.asarray(g.columns["energy_per_atom"])[~fin]).all()  # only final ones computed
    # Pareto fronts over all sets: front 1 not dominated; each later point dominated by the previous front
    p = result.pareto
    pts = np.column_stack([p["loss"], p["e_above_hull"]])
    assert len(pts) == sum(int(result.sets[k].masks.get("final", np.ones(len(ref), bool)).sum())
                           for k in ("guided", "unguided")) + len(ref)
    for k in range(1, p["front"].max() + 1):
        front = pts[p["front"] == k]
        rest = pts[p["front"] >= k]
        assert not any(dominates(q, f) for f in front for q in rest)
        if k > 1:
            prev = pts[p["front"] == k - 1]
            assert all(any(dominates(q, f) for q in prev) for f in front)
    best = result.summary["best_candidates"]
    assert best and best[0]["pareto_front"] == 1 and best[0]["set"] in ("guided", "unguided")


@needs_data
def test_report_files(carbon_result):
    result, out, written = carbon_result
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN
    assert summary["sets"]["guided"]["counts"] == result.sets["guided"].counts
    assert summary["tests"]["CN(C-C)"]["raw"]["p_value"] is not None
    html = (out / "report.html").read_text()
    assert "Structures surviving each step" in html and "data:image/png;base64," in html
    assert "One-sided two-proportion z-test" in html and "Best candidates" in html
    md = (out / "report.md").read_text()
    assert "| step | guided | unguided | references |" in md
    names = {Path(p).name for p in written["plots"]}
    assert {"counts.png", "dist_CN_C-C.png", "dist_volume_per_atom.png", "pareto.png", "kde2d.png"} <= names
    for name in names:
        _check_png(out / name)
    final = read(out / "final_guided.extxyz", index=":")
    assert len(final) == result.sets["guided"].counts["final"]
    assert all("e_above_hull" in a.info and "spacegroup_after" in a.info for a in final)
    rows = (out / "structures_guided.csv").read_text().splitlines()
    assert len(rows) == N + 1 and "min_distance" in rows[0]


@needs_data
def test_dft_benchmark_set_with_hull_gaps(tmp_path):
    """Stored DFT energies; a hull without oxygen: oxides are flagged, not dropped."""
    from monty.serialization import loadfn

    entries = loadfn(DATA / "references" / "mbd_2023-02-07-mp-elemental-reference-entries.json.gz")
    run = read_structures(DATA / "dft-benchmarks" / "mptrj-random-1k.xyz", limit=80)
    present = {s for a in run for s in a.get_chemical_symbols()}
    assert "O" in present
    hull = PhaseDiagramHull([e for el, e in entries.items() if el in present and el != "O"])
    refs = read_structures(DATA / "dft-benchmarks" / "alexandria-random-1k.xyz", limit=150)
    with pytest.warns(UserWarning, match="could not be placed on the hull"):
        result = analyze(run, references=refs, hull=hull, symprec=0.01)
    g = result.sets["guided"]
    c = g.counts
    assert c["read"] == 80 and c["final"] > 0
    assert c["with_energy"] == c["final"]  # energies stored in the extxyz files
    assert c["with_e_above_hull"] < c["final"]
    flagged = [k for k, why in enumerate(g.columns["hull_problem"]) if why and why != "no energy"]
    assert flagged and all(np.isnan(g.columns["e_above_hull"][k]) for k in flagged)
    assert all("O" in g.structures[k].get_chemical_symbols() for k in flagged)
    assert all("'O'" in g.columns["hull_problem"][k] for k in flagged)
    assert any(g.masks["final"][k] for k in flagged)  # kept in the final set
    assert "stored" in result.summary["energy"]["source"]
    result.write_report(tmp_path, formats=("md",))
    assert (tmp_path / "report.md").is_file() and not (tmp_path / "report.html").exists()


def test_compare_warns_on_mismatched_settings(tmp_path):
    for name, natoms, seed, elements in (("g", 8, 1, "Si"), ("u", 12, 2, "Ge")):
        d = tmp_path / name
        d.mkdir()
        write(d / "structures.extxyz", [bulk(elements), bulk(elements, "sc", a=2.6)], format="extxyz")
        (d / "config.json").write_text(json.dumps({"model": "chemical_system", "num_atoms": natoms,
                                                   "seed": seed, "guidance": {"k": 0.05}}))
    with pytest.warns(UserWarning, match="num_atoms"):
        result = analyze(tmp_path / "g", compare=tmp_path / "u")
    warnings = " ".join(result.warnings)
    assert "different elements" in warnings and "seed" not in warnings and "guidance" not in warnings
    assert compare_settings({"a": {"b": 1}, "seed": 1}, {"a": {"b": 2}, "seed": 2}) == \
        ["setting 'a.b' differs: 1 (guided) vs 2 (unguided)"]


def test_objectives_from_run_config(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    write(d / "structures.extxyz", [bulk("NaCl", "rocksalt", a=5.64), bulk("NaCl", "cesiumchloride", a=3.4)],
          format="extxyz")
    (d / "config.json").write_text(json.dumps(
        {"objectives": [{"name": "Coordination", "center": "Na", "neighbor": "Cl", "target": 6, "cutoff": 3.2}]}))
    result = analyze(d, symmetrize=False)
    assert result.sets["guided"].columns["CN(Na-Cl)"].tolist() == [6.0, 8.0]
    assert result.summary["satisfaction"]["CN(Na-Cl)"]["guided"]["k_raw"] == 1


def test_analyze_bad_input():
    with pytest.raises(ValueError, match="similarity_threshold"):
        analyze([bulk("Si")], similarity_threshold=2.0)
    with pytest.raises(TypeError, match="colour"):
        analyze([bulk("Si")], colour="red")
    with pytest.raises(ValueError, match="no readable structure"):
        analyze([])
    with pytest.raises(TypeError, match="e_above_hull"):
        analyze([bulk("Si")], hull=object())
    with pytest.raises(FileNotFoundError, match="no_such_hull"):
        analyze([bulk("Si")], hull="no_such_hull.csv")


def test_objectives_of_aseguide_constraints_are_accepted():
    """Soft objectives (duck typing) and their todict() in a run config (hard equivalents)."""
    constraints = pytest.importorskip("aseguide.constraints")
    rocksalt, cscl = bulk("NaCl", "rocksalt", a=5.64), bulk("NaCl", "cesiumchloride", a=3.4)
    soft = constraints.Coordination("Na", "Cl", target=6, cutoff=3.2, sharpness=60.0)
    vpa = constraints.VolumePerAtom(target=22.0)
    result = analyze([rocksalt, cscl], objectives=[soft, vpa], symmetrize=False)
    cols = result.sets["guided"].columns
    names = [r["name"] for r in result.summary["objectives"]]
    assert len(names) == 2
    np.testing.assert_allclose(cols[names[0]], [6.0, 8.0], atol=0.05)  # soft count, sharp sigmoid
    np.testing.assert_allclose(cols[names[1]], [5.64**3 / 8, 3.4**3 / 2], rtol=1e-9)
    assert result.summary["satisfaction"][names[0]]["guided"]["k_raw"] == 1
    json.dumps(result.summary, allow_nan=False)  # Target objects serialised
    from aseguide.analysis import hard_objective

    hard = hard_objective(soft.todict())
    assert isinstance(hard, HardView) and hard.cutoff == pytest.approx(3.2) and hard.target == Target(6.0)
    assert isinstance(hard_objective(vpa.todict()).objective, constraints.VolumePerAtom)
    with pytest.warns(DeprecationWarning, match="hard_objective"):
        from aseguide.analysis import objective_from_dict
    assert objective_from_dict is hard_objective
