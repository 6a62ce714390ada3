"""The ``aseguide`` command line: sub-commands, help, version, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ase.build import bulk
from ase.io import write

import aseguide
from aseguide import cli
from aseguide.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture()
def small_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    frames = [bulk("Si"), bulk("Si").repeat((2, 1, 1)), bulk("Ge"), bulk("Si", "sc", a=2.6)]
    for k, a in enumerate(frames):
        a.info["loss"] = 0.1 * k
    write(run / "structures.extxyz", frames, format="extxyz")
    return run


def test_version_and_help_exit_zero(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == EXIT_OK
    assert capsys.readouterr().out.strip() == f"aseguide {aseguide.__version__}"
    for argv in (["--help"], ["analyze", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_OK
    out = capsys.readouterr().out
    assert "--compare" in out and "--reference" in out and "Exit codes" in out


def test_usage_errors_exit_two(capsys, tmp_path):
    assert main([]) == EXIT_USAGE  # no command: help on stderr
    for argv in (["frobnicate"], ["analyze"], ["analyze", ".", "--symprec", "-1"], ["analyze", ".", "--bogus"],
                 ["analyze", ".", "--pair-threshold", "CC1.1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == EXIT_USAGE, argv
    missing = tmp_path / "no_such_run"
    assert main(["analyze", str(missing)]) == EXIT_USAGE
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["analyze", str(empty), "-q"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "aseguide analyze: error:" in err and "empty" in err and "no structure file" in err


def test_bad_values_are_named(capsys, small_run, tmp_path):
    assert main(["analyze", str(small_run), "--objective", "coordination:Si:4", "-q"]) == EXIT_USAGE
    assert "coordination:Si:4" in capsys.readouterr().err
    assert main(["analyze", str(small_run), "--similarity-threshold", "3", "-q"]) == EXIT_USAGE
    assert "similarity_threshold=3.0" in capsys.readouterr().err
    assert main(["analyze", str(small_run), "--pair-threshold", "Qq-C=1.0", "-q"]) == EXIT_USAGE
    assert "'Qq'" in capsys.readouterr().err
    assert main(["analyze", str(small_run), "--hull", str(tmp_path / "nohull.csv"), "-q"]) == EXIT_USAGE
    assert "nohull.csv" in capsys.readouterr().err
    table = tmp_path / "hull.csv"
    table.write_text("formula,energy\nSi,-5.4\n")
    assert main(["analyze", str(small_run), "--hull", str(table), "-q"]) == EXIT_USAGE
    assert "--hull-energy" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.cif").write_text("not a cif at all")
    assert main(["analyze", str(broken), "-q"]) == EXIT_USAGE
    assert "x.cif" in capsys.readouterr().err


def test_analyze_writes_report(capsys, small_run, tmp_path):
    out = tmp_path / "report"
    code = main(["analyze", str(small_run), "--compare", str(small_run), "--reference", str(small_run),
                 "--objective", "coordination:Si-Si:4:cutoff=2.6", "--objective", "volume_per_atom:20",
                 "--out", str(out)])
    assert code == EXIT_OK
    captured = capsys.readouterr()
    assert "guided: 4 read" in captured.out and str(out / "report.html") in captured.out
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["sets"]["guided"]["counts"]
    assert counts["read"] == 4 and counts["unique"] == 3  # the Si supercell is a duplicate
    assert counts["novel"] == 0  # every structure is among the references
    assert summary["tests"]["CN(Si-Si)"]["raw"]["p_value"] == pytest.approx(0.5)  # same data both arms
    for name in ("report.html", "report.md", "counts.png", "dist_CN_Si-Si.png", "kde2d.png"):
        assert (out / name).is_file(), name


def test_runtime_failures_exit_one(capsys, small_run, tmp_path, monkeypatch):
    # aseguide.calculators not importable: a clear message and exit code 1
    monkeypatch.setitem(sys.modules, "aseguide.calculators", None)
    assert main(["analyze", str(small_run), "--calculator", "chgnet", "--out", str(tmp_path / "r"), "-q"]) \
        == EXIT_FAILURE
    assert "aseguide.calculators" in capsys.readouterr().err
    monkeypatch.undo()

    def boom(*args, **kwargs):
        raise RuntimeError("calculation exploded")

    monkeypatch.setattr("aseguide.analysis.analyze", boom)
    assert main(["analyze", str(small_run), "--out", str(tmp_path / "r2"), "-q"]) == EXIT_FAILURE
    assert "calculation exploded" in capsys.readouterr().err


def test_subcommands_can_be_registered_from_another_module(capsys):
    seen = {}

    def register(subparsers):
        p = subparsers.add_parser("hello-plugin", help="a plugin command")
        p.add_argument("config")
        p.set_defaults(func=lambda args: seen.setdefault("config", args.config) and 0)

    cli.register_command(register)
    try:
        assert main(["hello-plugin", "cfg.yaml"]) == EXIT_OK
        assert seen == {"config": "cfg.yaml"}
        with pytest.raises(SystemExit):
            main(["--help"])
        out = capsys.readouterr().out
        assert "hello-plugin" in out and "generate" in out
    finally:
        cli._EXTRA_COMMANDS.remove(register)


def test_python_dash_m_entry_point(small_run, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    bad = subprocess.run([sys.executable, "-m", "aseguide", "analyze", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, check=False)
    assert bad.returncode == 2 and "missing" in bad.stderr


@pytest.mark.skipif(not (DATA / "carbon_24").is_dir(), reason=f"shared test data not found at {DATA}")
def test_analyze_carbon24_csv(tmp_path, capsys):
    out = tmp_path / "c24"
    code = main(["analyze", str(DATA / "carbon_24" / "val.csv"), "--limit", "60", "--compare",
                 str(DATA / "carbon_24" / "test.csv"), "--objective", "coordination:C-C:4:cutoff=1.8",
                 "--format", "md", "--out", str(out), "-q"])
    assert code == EXIT_OK
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sets"]["guided"]["counts"]["read"] == 60
    assert summary["sets"]["unguided"]["counts"]["read"] == 60
    assert (out / "report.md").is_file() and not (out / "report.html").exists()


@pytest.mark.parametrize("value", ["-3", "0", "-2..0"])
def test_impossible_volume_targets_are_refused_by_analyze_and_generate_alike(capsys, small_run, tmp_path, value):
    from aseguide.constraints import VolumePerAtom
    from aseguide.generate import GenerateConfig

    out = tmp_path / "report"
    assert main(["analyze", str(small_run), "--objective", f"volume_per_atom:{value}", "--out", str(out),
                 "-q"]) == EXIT_USAGE
    analyze_error = capsys.readouterr().err
    assert "is not positive" in analyze_error and not out.exists()
    target = [float(v) for v in value.split("..")] if ".." in value else float(value)
    with pytest.raises(ValueError, match="is not positive") as generate_error:
        GenerateConfig.from_dict({"objectives": [{"type": "VolumePerAtom", "target": target}]})
    with pytest.raises(ValueError, match="is not positive"):
        VolumePerAtom(target)
    # one validation: the same sentence after the value
    assert str(generate_error.value).split("is not positive", 1)[1] in analyze_error
