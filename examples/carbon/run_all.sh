#!/usr/bin/env bash
# Regenerate the carbon model, its evaluation and the case studies on a CPU (2 cores are enough).
# Usage, from the repository root:  bash examples/carbon/run_all.sh [train|package|steps|evaluate|cases|analyze|save|all]
# Every stage resumes where it stopped, so the whole can be spread over several sittings:
#   train     aseguide train (continues from checkpoints/resume.pt, or from the committed training state; 6000 steps in total)
#   package   copies the model to aseguide/data/models/carbon-24-small (load_model("carbon-24-small"))
#   steps     quality vs number of sampling steps (64 structures at 100/250/500/1000 steps)
#   evaluate  512 unguided structures at the default step count vs the held-out split
#   cases     the four case studies, 200 guided structures each vs the first 200 unguided ones
#   analyze   the results table of what is generated so far (generates nothing)
#   save      copies the generated runs (finished batches) to examples/carbon/generated/, which
#             evaluate and cases restore on a fresh clone (generation resumes from them)
set -euo pipefail
stage="${1:-all}"
MODEL_RUN=runs/carbon-24-small
PACKAGED=aseguide/data/models/carbon-24-small
STATE=examples/carbon/training_state   # the training state of the last sitting, committed to continue on a fresh clone

if [[ "$stage" == train || "$stage" == all ]]; then
    if [[ ! -f "$MODEL_RUN/checkpoints/resume.pt" && -f "$STATE/resume.pt" ]]; then
        mkdir -p "$MODEL_RUN/checkpoints"
        cp "$STATE"/{config.yaml,split.json,train_log.csv} "$MODEL_RUN"/
        cp "$STATE/resume.pt" "$MODEL_RUN/checkpoints/"
    fi
    if [[ -f "$MODEL_RUN/checkpoints/resume.pt" ]]; then
        aseguide train examples/carbon/train.yaml --output "$MODEL_RUN" --resume
    else
        aseguide train examples/carbon/train.yaml --output "$MODEL_RUN"
    fi
fi
if [[ "$stage" == package || "$stage" == train || "$stage" == all ]]; then
    rm -rf "$PACKAGED" && mkdir -p "$PACKAGED/checkpoints"
    cp "$MODEL_RUN"/{config.yaml,model_card.md,split.json,train_log.csv,held_out_log.csv} "$PACKAGED"/
    cp "$MODEL_RUN"/checkpoints/last.ckpt "$PACKAGED"/checkpoints/
    mkdir -p "$STATE" && cp "$MODEL_RUN"/{config.yaml,split.json,train_log.csv,held_out_log.csv} "$STATE"/
    cp "$MODEL_RUN"/checkpoints/resume.pt "$STATE"/
fi
if [[ "$stage" == steps || "$stage" == all ]]; then
    python examples/carbon/steps_study.py --model "$PACKAGED" --model-dir "$PACKAGED" \
        --steps-list 100,250,500,1000 --num-structures 64 --output runs/carbon/steps
    mkdir -p examples/carbon/evaluation && cp runs/carbon/steps/steps.{md,json} examples/carbon/evaluation/
fi
GENERATED=examples/carbon/generated   # committed copies of the generated runs (finished batches), so a fresh clone resumes
if [[ "$stage" == evaluate || "$stage" == cases || "$stage" == analyze || "$stage" == all ]]; then
    for run in unguided volume cn4 cn3 ehull; do
        if [[ ! -d "runs/carbon/$run" && -d "$GENERATED/$run" ]]; then
            mkdir -p runs/carbon && cp -r "$GENERATED/$run" runs/carbon/
        fi
    done
fi
if [[ "$stage" == evaluate || "$stage" == all ]]; then
    aseguide generate examples/carbon/unguided.yaml --output runs/carbon/unguided --resume   # 512 structures
    python -m aseguide.evaluation runs/carbon/unguided --model-dir "$PACKAGED" --out examples/carbon/evaluation
    python examples/carbon/card_evaluation.py examples/carbon/evaluation/metrics.json "$PACKAGED/model_card.md" \
        --command "bash examples/carbon/run_all.sh evaluate"
fi
if [[ "$stage" == cases || "$stage" == all ]]; then
    python examples/carbon/run.py --output runs/carbon --calculator chgnet --model-dir "$PACKAGED" --energy --resume
fi
if [[ "$stage" == analyze ]]; then   # what is generated so far, nothing generated
    python examples/carbon/run.py --output runs/carbon --calculator chgnet --model-dir "$PACKAGED" --energy \
        --analyze-only
fi
if [[ "$stage" == cases || "$stage" == analyze || "$stage" == all ]]; then
    mkdir -p examples/carbon/results
    for f in results.md ehull_summary.json ehull.png; do
        if [[ -f "runs/carbon/$f" ]]; then cp "runs/carbon/$f" examples/carbon/results/; fi
    done
    for r in volume cn4 cn3; do
        if [[ -f "runs/carbon/report_$r/summary.json" ]]; then
            mkdir -p "examples/carbon/results/$r" && cp runs/carbon/report_$r/*.png runs/carbon/report_$r/report.md \
                runs/carbon/report_$r/summary.json "examples/carbon/results/$r/"
        fi
    done
fi
if [[ "$stage" == save || "$stage" == evaluate || "$stage" == cases || "$stage" == all ]]; then
    mkdir -p "$GENERATED"
    for run in unguided volume cn4 cn3 ehull; do
        if [[ -d "runs/carbon/$run" ]]; then
            rm -rf "${GENERATED:?}/$run" && cp -r "runs/carbon/$run" "$GENERATED/"
        fi
    done
fi
