#!/usr/bin/env bash
# Regenerate the carbon model, its evaluation and the case studies (needs a GPU).
# Usage, from the repository root:  bash examples/carbon/run_all.sh [train|evaluate|cases|all]
# Stages can be run in separate sessions: each reads the previous stage's files.
set -euo pipefail
stage="${1:-all}"
MODEL_RUN=runs/carbon-24-small
PACKAGED=aseguide/data/models/carbon-24-small

if [[ "$stage" == train || "$stage" == all ]]; then
    aseguide train examples/carbon/train.yaml --output "$MODEL_RUN"
    rm -rf "$PACKAGED" && mkdir -p "$PACKAGED/checkpoints"
    cp "$MODEL_RUN"/{config.yaml,model_card.md,split.json,train_log.csv} "$PACKAGED"/
    cp "$MODEL_RUN"/checkpoints/last.ckpt "$PACKAGED"/checkpoints/
fi
if [[ "$stage" == evaluate || "$stage" == all ]]; then
    # 1000 unguided structures (the case studies' twin, same settings) vs the held-out split
    aseguide generate examples/carbon/unguided.yaml --output runs/carbon/unguided --resume
    python -m aseguide.evaluation runs/carbon/unguided --model-dir "$PACKAGED" --out examples/carbon/evaluation
fi
if [[ "$stage" == cases || "$stage" == all ]]; then
    python examples/carbon/run.py --output runs/carbon --calculator chgnet --model-dir "$PACKAGED" --resume
    mkdir -p examples/carbon/results
    cp runs/carbon/results.md examples/carbon/results/
    for r in volume cn4 cn3; do
        mkdir -p "examples/carbon/results/$r" && cp runs/carbon/report_$r/*.png runs/carbon/report_$r/report.md \
            runs/carbon/report_$r/summary.json "examples/carbon/results/$r/"
    done
fi
