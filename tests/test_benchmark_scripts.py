"""The benchmark scripts run (tiny settings) and print every figure they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_guidance_overhead_prints_every_configuration():
    out = _run("benchmarks/guidance_overhead.py", "--repeats", "1", "--warmup", "0", "--batch-size", "4")
    rows = {line.split("  ")[0].strip(): line.split() for line in out.splitlines()[2:] if line.strip()}
    assert set(rows) == {"unguided", "backward K=1 m=2", "backward K=3 m=2", "forward+backward K=1 m=2",
                         "forward+backward K=3 m=2", "forward only K=1"}
    assert float(rows["unguided"][-2]) == 1.0
    assert all(float(r[-4]) > 0 for r in rows.values())


def test_radius_graph_speed_reports_identical_structures():
    out = _run("benchmarks/radius_graph_speed.py", "--num-structures", "3", "--steps", "3", "--rounds", "1",
               "--threads", "1")
    assert "speed-up (median):" in out
    assert "largest volume difference: 0.00e+00" in out


def test_cpu_sampling_time_reports_the_run():
    import json

    out = _run("benchmarks/cpu_sampling_time.py", "--batch-size", "2", "--num-atoms", "4", "--steps", "3",
               "--threads", "1", "--repeats", "2")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["batch_size"] == 2 and result["num_atoms"] == 4
    assert len(result["run_seconds"]) == 2 and result["median_seconds"] > 0
    assert abs(result["ms_per_step"] - 1000 * result["median_seconds"] / 3) < 2.0  # median_seconds is rounded
