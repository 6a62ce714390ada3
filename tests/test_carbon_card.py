"""examples/carbon/card_evaluation.py: the evaluation table of the model card."""

from __future__ import annotations

import doctest
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("card_evaluation", ROOT / "examples" / "carbon" / "card_evaluation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doctests():
    result = doctest.testmod(_module())
    assert result.attempted >= 2 and result.failed == 0


def test_card_gets_the_numbers_and_keeps_other_sections(tmp_path):
    module = _module()
    metrics = {"n_generated": 512, "n_reference": 300, "settings": {"min_distance": 1.1, "cutoff": 1.8,
                                                                     "calculator": "chgnet"},
               "short_distance_screen": {"generated": 0.9375, "reference": 1.0},
               "volume_per_atom": {"median_generated": 6.528, "median_reference": 6.071, "wasserstein": 0.2783},
               "coordination": {"wasserstein": 0.188, "fraction_3_generated": 0.4456, "fraction_3_reference": 0.4053,
                                "fraction_4_generated": 0.4812, "fraction_4_reference": 0.5943},
               "spacegroup": {"above_P1_generated": 0.12, "above_P1_reference": 0.88},
               "energy_per_atom": {"median_generated": -8.0897, "median_reference": -8.7377, "wasserstein": 0.7846}}
    card = "# m\n## Training\nsteps\n## Evaluation (preliminary)\nold table\n## Limits\nsmall\n"
    new = module.replace_section(card, module.evaluation_section(metrics, "bash run_all.sh evaluate"))
    assert "old table" not in new and "## Training\nsteps\n" in new and new.endswith("## Limits\nsmall\n")
    assert "## Evaluation (512 unguided structures vs the 300 held-out structures)" in new
    assert "| clean (no C–C < 1.1 Å) | 93.8 % | 100.0 % | – |" in new
    assert "| median volume per atom (Å³) | 6.53 | 6.07 | 0.278 |" in new
    assert "| C–C coordination at 1.8 Å: 3 / 4 | 44.6 % / 48.1 % | 40.5 % / 59.4 % | 0.188 |" in new
    assert "| median energy per atom, chgnet (eV) | -8.090 | -8.738 | 0.785 |" in new
    assert "Command: `bash run_all.sh evaluate`." in new
    assert "only C" not in new  # metrics written before the element check have no such rows


def test_card_reports_structures_with_other_elements():
    module = _module()
    metrics = {"n_generated": 4, "n_reference": 3, "settings": {"min_distance": 1.1, "cutoff": 1.8},
               "short_distance_screen": {"generated": 1.0, "reference": 1.0},
               "only_element": {"generated": 0.75, "reference": 1.0}, "valid": {"generated": 0.5, "reference": 1.0},
               "volume_per_atom": {"median_generated": 6.5, "median_reference": 6.1, "wasserstein": 0.3},
               "coordination": {"wasserstein": 0.2, "fraction_3_generated": 0.4, "fraction_3_reference": 0.4,
                                "fraction_4_generated": 0.5, "fraction_4_reference": 0.6},
               "spacegroup": {"above_P1_generated": 0.1, "above_P1_reference": 0.9}}
    section = module.evaluation_section(metrics)
    assert "| only C (no other element) | 75.0 % | 100.0 % | – |" in section
    assert "| valid (clean and only C) | 50.0 % | 100.0 % | – |" in section
