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
#   guidance potential), SevenNet and GRACE (the paper's validation potential) are installed
#   too unless ASEGUIDE_EXTRAS says otherwise (ASEGUIDE_EXTRAS="" for the minimum,
#   "mattersim,sevenn" without GRACE's ~1.4 GB of TensorFlow; add "mp" for the Materials
#   Project client).
# - Ray (the "ray" extra, for `cluster: ray`: generation and analysis over a Ray cluster) is
#   installed by default too: ray==2.60.0 (RAY_SPEC overrides, e.g. RAY_SPEC="ray==2.40.0" to
#   match the Ray of an existing cluster: every node and the driver need the same version),
#   pinned through the constraints file, so the line run is
#   pip install -c <torch==installed, ray==2.60.0> -e ".[test,...,ray]"
#   (~240 MB installed; it needs no torch and replaces nothing).
# - mattergen 1.0.3 comes from PyPI with --no-deps (its metadata pins torch==2.2.1+cu118
#   and numpy<2); aseguide declares the dependencies MatterGen really needs. It, mattersim,
#   tf-keras and tensorpotential are installed after aseguide, so pip prints no red conflict
#   block about the requirements they skip on purpose; 'pip check' then shows any other.
# - GRACE: tensorpotential 0.6.2.1 with --no-deps (its metadata asks for
#   tensorflow[and-cuda], gigabytes of CUDA wheels, and pandas<3, which its model loading and
#   calculator do not need); an existing TensorFlow 2.16-2.20 is kept, otherwise the CPU build
#   tensorflow-cpu==2.20.0 is installed (TF_SPEC overrides, e.g. TF_SPEC="tensorflow[and-cuda]==2.20.0"
#   for a GPU), then tf-keras of the same minor version with --no-deps (its metadata asks for
#   the "tensorflow" distribution, which tensorflow-cpu provides under another name); later
#   steps are constrained to that TensorFlow.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python}
PIP="$PYTHON -m pip"
ASEGUIDE_EXTRAS=${ASEGUIDE_EXTRAS-mattersim,sevenn,grace,ray}

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

tf_dist() {  # "ok NAME==VERSION" (usable by tensorpotential), "bad NAME==VERSION" or nothing
    $PYTHON - <<'PY'
from importlib.metadata import PackageNotFoundError, version
for dist in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-macos"):
    try:
        v = version(dist)
    except PackageNotFoundError:
        continue
    major, minor = (int(p) for p in v.split(".")[:2])
    print("ok" if (2, 16) <= (major, minor) <= (2, 20) else "bad", f"{dist}=={v}")
    break
PY
}
case ",${ASEGUIDE_EXTRAS:-}," in
    *,grace,*)
        TF_DIST=$(tf_dist)
        if [ -z "$TF_DIST" ]; then
            $PIP install -c "$CONSTRAINTS" "${TF_SPEC:-tensorflow-cpu==2.20.0}"
            TF_DIST=$(tf_dist)
        fi
        case "$TF_DIST" in
            ok\ *) ;;
            *) echo "install.sh: GRACE (tensorpotential 0.6.2.1) needs TensorFlow 2.16-2.20, found: ${TF_DIST:-none}." \
                    "Install one (TF_SPEC=...) or leave grace out of ASEGUIDE_EXTRAS." >&2
               exit 1 ;;
        esac
        TF_DIST=${TF_DIST#ok }
        echo "$TF_DIST" >> "$CONSTRAINTS"
        TF_MINOR=$(echo "${TF_DIST#*==}" | cut -d. -f1-2)
        ;;
esac
case ",${ASEGUIDE_EXTRAS:-}," in
    *,ray,*) echo "${RAY_SPEC:-ray==2.60.0}" >> "$CONSTRAINTS" ;;
esac
# aseguide first, with the dependencies it declares (those MatterGen, MatterSim and
# tensorpotential really need), then the packages whose metadata cannot hold here, without
# theirs: in this order pip never resolves anything next to their impossible pins, so it
# prints no red "dependency conflicts" block about them (--no-warn-conflicts covers a second
# run, when they are already installed).
$PIP install --no-warn-conflicts -c "$CONSTRAINTS" -e ".[test${ASEGUIDE_EXTRAS:+,$ASEGUIDE_EXTRAS}]"
$PIP install --no-deps "mattergen==1.0.3"
case ",${ASEGUIDE_EXTRAS:-}," in
    *,mattersim,*) $PIP install --no-deps "mattersim==1.2.3" ;;
esac
case ",${ASEGUIDE_EXTRAS:-}," in
    *,grace,*) $PIP install --no-deps "tf-keras~=${TF_MINOR}.0" "tensorpotential==0.6.2.1" ;;
esac
# pip's conflict report without the requirements skipped on purpose: anything else is shown.
SKIPPED_ON_PURPOSE='^(mattergen 1[.]0[.]3|mattersim 1[.]2[.]3|tensorpotential 0[.]6[.]2[.]1|tf-keras [0-9.]+) '
OTHER_CONFLICTS=$($PIP check 2>&1 | grep -Ev "$SKIPPED_ON_PURPOSE" | grep -v '^No broken requirements' || true)
if [ -n "$OTHER_CONFLICTS" ]; then
    echo "install.sh: pip check reports broken requirements in this environment:" >&2
    echo "$OTHER_CONFLICTS" >&2
fi
echo "install.sh: mattergen, mattersim and tensorpotential are installed without their declared dependencies" \
     "on purpose ('pip check' lists those as unmet; see the README's Install section)"
$PYTHON -c "import aseguide, torch; print('aseguide', aseguide.__version__, 'with torch', torch.__version__)"
case ",${ASEGUIDE_EXTRAS:-}," in
    *,ray,*) $PYTHON -c "import ray; print('Ray', ray.__version__, '(cluster: ray)')" ;;
esac
case ",${ASEGUIDE_EXTRAS:-}," in
    *,grace,*) $PYTHON -c "import torch, tensorpotential, tensorflow as tf
print('GRACE: tensorpotential', tensorpotential.__version__, 'with tensorflow', tf.__version__)" ;;
esac
