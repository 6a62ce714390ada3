"""CPU smoke test of benchmarks/sampler_speed.py (issue 7's speed benchmark)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("mattergen")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_speed.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("sampler_speed", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_structures_per_hour_and_ratios_arithmetic(bench):
    assert bench.structures_per_hour(0.5, 256, 1000) == pytest.approx(256 * 3600 / 500)
    results = {"mattergen": {"seconds_per_step": 1.0}, "mattergen_cfg": {"seconds_per_step": 2.0}}
    for name, seconds in (("unguided", 0.5), ("backward", 0.55), ("backward_k3", 1.5), ("forward", 1.0),
                          ("paper", 4.0)):
        results[f"{name}@mixed"] = {"seconds_per_step": seconds,
                                      "structures_per_hour": bench.structures_per_hour(seconds, 100)}
    ratios = bench.ratios(results)
    assert ratios["speedup_unguided_mixed"] == pytest.approx(2.0)
    assert ratios["speedup_paper_mixed"] == pytest.approx(0.5)
    assert ratios["backward_over_unguided_mixed"] == pytest.approx(1.1)
    assert ratios["backward_k3_over_backward_mixed"] == pytest.approx(1.5 / 0.55)
    assert ratios["forward_over_unguided_mixed"] == pytest.approx(2.0)
    # 1000 structures at 100 per batch, 4 s per step, 1000 steps: 10 batches of 4000 s
    assert ratios["hours_paper_1000_mixed"] == pytest.approx(10 * 4000 / 3600)
    assert ratios["minutes_unguided_1000_mixed"] == pytest.approx(10 * 500 / 60)


def test_mattergen_timing_holds_the_state_at_the_prior(bench, tiny_model):
    """The inpainting mask keeps positions and cell at the prior through MatterGen's own loop."""
    sampler = bench.mattergen_sampler(tiny_model, 1.0, 1000)
    session = tiny_model.session(torch.full((3,), 5), 1000)
    torch.manual_seed(0)
    prior = session._graph(session.prior())
    mask = {"pos": torch.ones_like(prior["pos"]), "cell": torch.ones_like(prior["cell"])}
    sampler._max_t, sampler._eps_t, sampler.N = 0.05, 0.05 - 1e-4, 3
    with torch.no_grad():
        held, _, _ = sampler._denoise(batch=prior, mask=mask, record=False)
        moved, _, _ = sampler._denoise(batch=prior, mask={}, record=False)
    assert torch.equal(held["pos"], prior["pos"]) and torch.equal(held["cell"], prior["cell"])
    assert not torch.equal(moved["pos"], prior["pos"])  # without the mask the sampler does move


def test_run_on_cpu_reports_every_setting(bench, capsys):
    settings = ("mattergen", "mattergen_cfg", "unguided", "backward", "paper")
    report = bench.main(["--model", "tiny", "--batch-size", "2", "--n-atoms", "4", "--steps-timed", "2",
                         "--settings", ",".join(settings), "--precisions", "fp32,mixed"])
    assert set(report["results"]) == {"mattergen", "mattergen_cfg", "unguided@fp32", "unguided@mixed",
                                      "backward@fp32", "backward@mixed", "paper@fp32", "paper@mixed"}
    for result in report["results"].values():
        assert result["ms_per_step"] > 0 and math.isfinite(result["structures_per_hour"])
        assert result["peak_gib"] is None  # CPU: no GPU memory to report
    for key in ("speedup_unguided_fp32", "speedup_unguided_mixed", "backward_over_unguided_mixed",
                "speedup_paper_mixed", "hours_paper_1000_mixed"):
        assert report["ratios"][key] > 0
    printed = capsys.readouterr().out
    assert json.loads(printed.strip().splitlines()[-1])["config"]["device"] == "cpu"
    assert "ms/step" in printed


def test_bad_requests_fail_before_timing(bench, tiny_model):
    with pytest.raises(ValueError, match="unknown setting"):
        bench.run(settings=("mattergen", "fastest"))
    with pytest.raises(ValueError, match="unknown precision policy"):
        bench.run(settings=("unguided",), precisions=("fp8",))
    with pytest.raises(ValueError, match="steps_timed must be >= 2"):
        bench.time_mattergen(tiny_model, guidance_scale=1.0, batch_size=1, n_atoms=4, steps_timed=1)
    with pytest.raises(ValueError, match="outside the guided range"):
        bench.time_aseguide(tiny_model, "backward", precision="fp32", batch_size=1, n_atoms=4, steps_timed=2,
                            t_value=0.99)


def test_default_precisions_are_accepted_and_bad_ones_are_usage_errors(bench, capsys, monkeypatch):
    """`python benchmarks/sampler_speed.py --model full` must not fail at once on its own defaults."""
    seen = {}
    monkeypatch.setattr(bench, "run", lambda **kwargs: seen.update(kwargs) or {"config": {}, "results": {},
                                                                                "ratios": {}})
    monkeypatch.setattr(bench, "format_table", lambda report: "")
    bench.main(["--model", "full"])
    assert seen["model"] == "full" and seen["precisions"]
    from aseguide.precision import check_precision

    for p in seen["precisions"]:
        check_precision(p)
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--precisions", "fp32,default"])
    assert exit_info.value.code == 2 and "'default'" in capsys.readouterr().err
