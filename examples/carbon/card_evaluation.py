"""Write the unguided evaluation (``python -m aseguide.evaluation``) into the model card.

Replaces the ``## Evaluation`` section of ``model_card.md`` (everything up to the next
``## `` heading, or the end) by a table built from the evaluation's ``metrics.json``,
so that ``run_all.sh package`` (which rewrites the card from the training run) followed
by ``run_all.sh evaluate`` gives a complete card.

Usage: ``python examples/carbon/card_evaluation.py METRICS_JSON MODEL_CARD [--command TEXT]``
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def evaluation_section(metrics: dict[str, Any], command: str = "") -> str:
    """The ``## Evaluation`` section for ``metrics`` (the output of ``aseguide.evaluation``).

    Examples
    --------
    >>> m = {"n_generated": 2, "n_reference": 3, "settings": {"min_distance": 1.1, "cutoff": 1.8},
    ...      "short_distance_screen": {"generated": 0.5, "reference": 1.0},
    ...      "volume_per_atom": {"median_generated": 6.5, "median_reference": 6.1, "wasserstein": 0.3},
    ...      "coordination": {"wasserstein": 0.2, "fraction_3_generated": 0.4, "fraction_3_reference": 0.4,
    ...                       "fraction_4_generated": 0.5, "fraction_4_reference": 0.6},
    ...      "spacegroup": {"above_P1_generated": 0.1, "above_P1_reference": 0.9}}
    >>> print(evaluation_section(m).splitlines()[4])
    | clean (no C–C < 1.1 Å) | 50.0 % | 100.0 % | – |
    """
    screen, volume = metrics["short_distance_screen"], metrics["volume_per_atom"]
    cn, sg, s = metrics["coordination"], metrics["spacegroup"], metrics["settings"]
    rows = [
        f"| clean (no C–C < {s['min_distance']} Å) | {screen['generated']:.1%} | {screen['reference']:.1%} | – |",
        *([f"| only C (no other element) | {metrics['only_element']['generated']:.1%} | "
           f"{metrics['only_element']['reference']:.1%} | – |",
           f"| valid (clean and only C) | {metrics['valid']['generated']:.1%} | {metrics['valid']['reference']:.1%} "
           "| – |"] if "valid" in metrics else []),
        f"| median volume per atom (Å³) | {volume['median_generated']:.2f} | {volume['median_reference']:.2f} "
        f"| {volume['wasserstein']:.3f} |",
        f"| C–C coordination at {s['cutoff']} Å: 3 / 4 | {cn['fraction_3_generated']:.1%} / "
        f"{cn['fraction_4_generated']:.1%} | {cn['fraction_3_reference']:.1%} / {cn['fraction_4_reference']:.1%} "
        f"| {cn['wasserstein']:.3f} |",
        f"| above P1 | {sg['above_P1_generated']:.1%} | {sg['above_P1_reference']:.1%} | – |",
    ]
    if "energy_per_atom" in metrics:
        e = metrics["energy_per_atom"]
        rows.append(f"| median energy per atom, {s.get('calculator', 'potential')} (eV) | "
                    f"{e['median_generated']:.3f} | {e['median_reference']:.3f} | {e['wasserstein']:.3f} |")
    lines = [
        f"## Evaluation ({metrics['n_generated']} unguided structures vs the {metrics['n_reference']} "
        "held-out structures)",
        "",
        "| | generated | held-out | Wasserstein |",
        "|---|---|---|---|",
        *[row.replace("%", " %") for row in rows],
    ]
    if command:
        lines += ["", f"Command: `{command}`."]
    return "\n".join(lines) + "\n\n"


def replace_section(card: str, section: str) -> str:
    """``card`` with its ``## Evaluation`` section replaced by ``section`` (appended when absent).

    Examples
    --------
    >>> replace_section("# m\\n## Data\\nx\\n## Evaluation (old)\\ny\\n## Notes\\nz\\n", "## Evaluation\\nnew\\n")
    '# m\\n## Data\\nx\\n## Evaluation\\nnew\\n## Notes\\nz\\n'
    """
    match = re.search(r"^## Evaluation.*?(?=^## |\Z)", card, flags=re.S | re.M)
    if match is None:
        return card.rstrip("\n") + "\n\n" + section
    return card[:match.start()] + section + card[match.end():]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("metrics")
    parser.add_argument("card")
    parser.add_argument("--command", default="")
    args = parser.parse_args(argv)
    metrics = json.loads(Path(args.metrics).read_text())
    card = Path(args.card)
    card.write_text(replace_section(card.read_text(), evaluation_section(metrics, args.command)))


if __name__ == "__main__":
    main()
