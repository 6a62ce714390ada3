"""Case study 5 of the paper: Cu–P -> 4 together with Cu–Cu -> 1 in Cu–Si–P–Ca.

The target motif is a Cu–Cu dimer in a distorted octahedral phosphorus environment
(Cu2P6 as two edge-sharing CuP4 tetrahedra, as in CuP2 and Cu4SiP8), written as two
coordination targets per Cu: Cu–P 4 (cutoff 2.89 Å) and Cu–Cu 1 (cutoff 3.14 Å), each
the sum of covalent radii + 0.5 Å, combined by the Euclidean norm (a ``Combined``
objective). The paper finds a new local maximum at (4, 1) in the joint distribution and
a zero-loss Cu2P6 structure 0.175 eV/atom above the hull.

The coordination objective is combined (Euclidean norm, as the paper combines losses)
with a ``MinDistance`` repulsion, r_min = 0.75 x the sum of the covalent radii of each
pair of elements (Cu–Cu 1.98 Å, Cu–P 1.79 Å, Ca–Ca 2.64 Å, ...): a soft count alone is
also satisfied by piling atoms on top of each other (METHOD.md, section 7). 0.75 lies
above the analysis' short-contact screen (0.6 x the same sums) and below real bond
lengths (about 0.85 x or more), so the repulsion removes collapsed structures without
biasing physical ones. The paper does not use this repulsion.

Usage: ``python examples/cu_si_p_ca/run.py [--model M --steps N --num-structures S --output DIR]``
(``--help`` for the other options).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _case_study import run_case  # noqa: E402

GUIDED = {"guided": "config.yaml"}


def main(argv=None):
    """Run the guided and unguided generations and write the report; see the module docstring."""
    return run_case(Path(__file__).resolve().parent, GUIDED, argv=argv, description=__doc__)


if __name__ == "__main__":
    from aseguide.cli import run_script

    sys.exit(run_script(main, prog=f"python {sys.argv[0]}"))
