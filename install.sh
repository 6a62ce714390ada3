#!/usr/bin/env bash
# Install aseguide with its MatterGen backend into the ACTIVE Python environment
# (a virtualenv or conda env of your choice).
#
#   python -m venv .venv && source .venv/bin/activate && ./install.sh
#
# - torch: an existing torch >= 2.2 is kept; otherwise torch==2.13.0 is installed
#   (TORCH_SPEC overrides, e.g. TORCH_SPEC="torch==2.5.1" for a CUDA build from your index).
#   Every later pip call is constrained to the torch that is installed, so nothing can
#   replace it with another (CUDA) build.
# - Potentials: CHGNet is always installed (the offline default); MatterSim (the paper's
#   guidance potential) and SevenNet are installed too unless ASEGUIDE_EXTRAS says otherwise
#   (ASEGUIDE_EXTRAS="" for the minimum; add "mp" for the Materials Project client; "grace"
#   needs tensorflow and is left to the user).
# - mattergen 1.0.3 comes from PyPI with --no-deps (its metadata pins torch==2.2.1+cu118
#   and numpy<2); aseguide declares the dependencies MatterGen really needs. It (and
#   mattersim) are installed after aseguide, so pip prints no conflict block about them.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
PIP="$PYTHON -m pip"
ASEGUIDE_EXTRAS=${ASEGUIDE_EXTRAS-mattersim,sevenn}

if ! $PYTHON - <<'PY' 2>/dev/null
import sys
import torch
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 2) else 1)
PY
then
    $PIP install "${TORCH_SPEC:-torch==2.13.0}"
fi
TORCH_VERSION=$($PYTHON -c "import torch; print(torch.__version__)")
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==${TORCH_VERSION}" > "$CONSTRAINTS"

# aseguide first, with the dependencies it declares (those MatterGen and MatterSim really
# need), then mattergen and mattersim without theirs: in this order pip never resolves
# anything next to their impossible pins, so it prints no red "dependency conflicts" block
# about them (--no-warn-conflicts covers a second run, when they are already installed).
$PIP install --no-warn-conflicts -c "$CONSTRAINTS" -e ".[test${ASEGUIDE_EXTRAS:+,$ASEGUIDE_EXTRAS}]"
$PIP install --no-deps "mattergen==1.0.3"
case ",${ASEGUIDE_EXTRAS:-}," in
    *,mattersim,*) $PIP install --no-deps "mattersim==1.2.3" ;;
esac
# pip's conflict report without the requirements skipped on purpose: anything else is shown.
SKIPPED_ON_PURPOSE='^(mattergen 1[.]0[.]3|mattersim 1[.]2[.]3) '
OTHER_CONFLICTS=$($PIP check 2>&1 | grep -Ev "$SKIPPED_ON_PURPOSE" | grep -v '^No broken requirements' || true)
if [ -n "$OTHER_CONFLICTS" ]; then
    echo "install.sh: pip check reports broken requirements in this environment:" >&2
    echo "$OTHER_CONFLICTS" >&2
fi
echo "install.sh: mattergen 1.0.3 and mattersim 1.2.3 are installed without their declared dependencies on" \
     "purpose ('pip check' lists those as unmet; see the README's Install section)"
$PYTHON -c "import aseguide, torch; print('aseguide', aseguide.__version__, 'with torch', torch.__version__)"
