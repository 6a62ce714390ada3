"""install.sh: mattergen/mattersim skip their pins without a red pip conflict block (issue 16)."""

from __future__ import annotations

import re
from pathlib import Path

INSTALL = (Path(__file__).resolve().parents[1] / "install.sh").read_text()
PIP_LINES = [line.strip() for line in INSTALL.splitlines() if "$PIP install" in line and not line.lstrip().startswith("#")]


def _line(pattern: str) -> int:
    found = [i for i, line in enumerate(PIP_LINES) if re.search(pattern, line)]
    assert len(found) == 1, (pattern, PIP_LINES)
    return found[0]


def test_no_deps_packages_are_installed_after_aseguide():
    """pip warns about the skipped pins only when it installs next to mattergen/mattersim."""
    aseguide = _line(r"-e \"\.")
    for package in ("mattergen==1.0.3", "mattersim==1.2.3", "tensorpotential==0.6.2.1"):
        index = _line(re.escape(package))
        assert "--no-deps" in PIP_LINES[index]
        assert index > aseguide, f"{package} must be installed after aseguide"
    assert "--no-warn-conflicts" in PIP_LINES[aseguide]  # a second run, when mattergen is already there


def test_other_conflicts_are_still_reported():
    pattern = re.search(r"SKIPPED_ON_PURPOSE='(.*?)'", INSTALL).group(1)
    assert "$PIP check" in INSTALL and 'grep -Ev "$SKIPPED_ON_PURPOSE"' in INSTALL
    report = ["mattergen 1.0.3 has requirement torch==2.2.1+cu118, but you have torch 2.13.0+cpu.",
              "mattersim 1.2.3 requires wandb, which is not installed.",
              "tf-keras 2.20.1 requires tensorflow, which is not installed.",
              "tensorpotential 0.6.2.1 has requirement pandas<3, but you have pandas 3.1.1.",
              "mattergen-extra 0.1 requires foo, which is not installed.",
              "tensorflow-cpu 2.20.0 requires bar, which is not installed."]
    assert [line for line in report if not re.search(pattern, line)] == report[4:]
