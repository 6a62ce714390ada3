"""Issue 14: generation and analysis spread over a Ray cluster (``cluster:``).

The settings and the missing-Ray error need no Ray. The rest starts a local Ray
instance inside the test module (2 CPUs, shut down at the end) or, for the driver
killed with ``kill -9``, a private one in a subprocess (its processes are found by
their temporary folder and ended by pid): equality with a run in one process, byte for
byte; a worker killed in the middle of a run; a worker lost to memory (split); a
driver killed after its first batch, then ``--resume``; energies of the analysis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from aseguide.cli import main
from aseguide.runs.cluster import WorkerPool, cluster_from_text, parse_cluster, require_ray
from aseguide.runs.config import GenerateConfig
from aseguide.runs.generate import generate

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_structures=8, batch_size=2, num_atoms=4, steps=3, seed=1, device="cpu",
             objectives=[{"type": "VolumePerAtom", "target": 12.0}],
             guidance={"recurrence": 1, "backward_strength": 0.05})
#: files that must be byte-identical between a run in one process and one on a cluster
COMPARED = ("structures.extxyz", "results.csv")

try:
    import ray
except ImportError:  # pragma: no cover - Ray is an optional extra
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="needs Ray (pip install 'aseguide[ray]')")


def files_of(out: Path) -> dict[str, bytes]:
    """The files that hold the structures: the extxyz, the table and every CIF."""
    files = {name: (out / name).read_bytes() for name in COMPARED}
    files.update({f"cifs/{p.name}": p.read_bytes() for p in sorted((out / "cifs").glob("*.cif"))})
    return files


# ------------------------------------------------------------------ settings (no Ray needed)
@pytest.mark.parametrize("value, message", [
    ({"workers": 0}, "workers must be a positive integer, got 0"),
    ({"workers": 1.5}, "workers must be a positive integer, got 1.5"),
    ({"workers": True}, "workers must be a positive integer, got True"),
    ({"workers": "2"}, "workers must be a positive integer, got '2'"),
    ({"gpus_per_worker": -1}, "gpus_per_worker must be a non-negative number, got -1"),
    ({"cpus_per_worker": 0}, "cpus_per_worker must be a positive number, got 0"),
    ({"address": ""}, "address must be"),
    ({"nodes": 2, "worker": 1}, r"unknown key\(s\) \['nodes', 'worker'\]"),
    ("slurm", "cluster must be 'local', 'ray' or a mapping"),
    (4, "cluster must be 'local', 'ray' or a mapping"),
])
def test_bad_cluster_settings_are_named_before_any_compute(value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        parse_cluster(value)
    with pytest.raises(ValueError, match=message):
        GenerateConfig(cluster=value, output=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cluster_settings_and_their_defaults():
    assert parse_cluster(None).is_local and parse_cluster("local").is_local
    ray_default = parse_cluster("ray")
    assert (ray_default.kind, ray_default.address, ray_default.workers) == ("ray", "auto", None)
    settings = parse_cluster({"address": "head:6379", "workers": 4, "gpus_per_worker": 0.5, "cpus_per_worker": 2})
    assert (settings.address, settings.workers, settings.gpus_per_worker, settings.cpus_per_worker) == \
        ("head:6379", 4, 0.5, 2.0)
    assert cluster_from_text("{address: local, workers: 2}") == {"address": "local", "workers": 2}
    assert cluster_from_text('{"workers": 3}') == {"workers": 3}
    # the setting is stored with the run but a resume may change it (it changes no structure)
    assert GenerateConfig(cluster="ray").todict()["cluster"] == "ray"


def test_command_line_names_a_bad_cluster_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--cluster", "{workers: -2}", "--output", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "workers must be a positive integer, got -2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", str(tmp_path), "--cluster", "{nodes: 2}"])
    assert "unknown key(s) ['nodes']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_without_ray_cluster_ray_says_what_to_install(monkeypatch, tmp_path, capsys, tiny_model):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'aseguide\[ray\]'"):
        require_ray()
    out = tmp_path / "run"
    with pytest.raises(ImportError, match="cluster: ray needs Ray"):
        generate(GenerateConfig(**SMALL, cluster="ray", output=str(out)))
    assert not out.exists(), "nothing may be written before the error"
    assert main(["generate", "--cluster", "ray", "--output", str(out), "-q"]) == 1
    assert "pip install 'aseguide[ray]'" in capsys.readouterr().err
    from ase.build import bulk

    from aseguide.analysis import analyze

    with pytest.raises(ImportError, match="cluster: ray needs Ray"):
        analyze([bulk("Cu")], cluster={"address": "local"})
    # cluster: local never imports Ray
    summary = generate(GenerateConfig(**{**SMALL, "num_structures": 2}, output=str(out)), model=tiny_model)
    assert summary.workers == 1 and summary.num_structures == 2


def test_energy_worker_builds_its_calculator_once_and_gives_the_energies_of_one_process():
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from aseguide.analysis.energy import EnergyWorker, cluster_energies, compute_energies

    structures = [bulk("Cu", "fcc", a=3.6), bulk("Au", "fcc", a=4.08)]
    worker = EnergyWorker(EMT)  # a factory is called once, in the worker
    assert isinstance(worker.calculator, EMT)
    assert np.array_equal(worker.energies(structures), compute_energies(structures, EMT()))
    assert np.array_equal(cluster_energies(structures, EMT(), "local"), compute_energies(structures, EMT()))


def test_readme_cluster_section_commands_are_valid():
    """The cluster section's `aseguide` lines parse, and its YAML is a valid configuration."""
    import re
    import shlex

    import yaml

    from aseguide.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Generating on a Ray cluster"):]
    section = section[:section.index("\n## ", 4)]
    commands = [shlex.split(line.removeprefix("$ "), comments=True)
                for block in re.findall(r"```console\n(.*?)```", section, re.S)
                for line in block.replace("\\\n", " ").splitlines()]
    aseguide_lines = [words[1:] for words in commands if words[:1] == ["aseguide"]]
    assert any(words[0] == "generate" for words in aseguide_lines)
    assert any(words[0] == "analyze" and "--cluster" in words for words in aseguide_lines)
    for words in aseguide_lines:
        build_parser().parse_args(words)
    assert any(words[:2] == ["ray", "start"] for words in commands)
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        config = GenerateConfig.from_dict(yaml.safe_load(block))
        assert not parse_cluster(config.cluster).is_local


# ------------------------------------------------------------------ on a local Ray instance
@pytest.fixture(scope="module")
def local_ray(one_thread):
    if ray is None:
        pytest.skip("needs Ray (pip install 'aseguide[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy workers below
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, one_thread):
    """The run in one process (no Ray)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    generate(GenerateConfig.from_dict({**SMALL, "output": str(out)}), model=tiny_model)
    return files_of(out)


def cluster_config(tiny_model_dir, out, **cluster) -> GenerateConfig:
    return GenerateConfig.from_dict({**SMALL, "model": str(tiny_model_dir), "output": str(out),
                                     "cluster": {"workers": 2, **cluster}})


@needs_ray
def test_two_workers_write_the_run_of_one_process_byte_for_byte(local_ray, tiny_model, tiny_model_dir, reference,
                                                                tmp_path):
    out = tmp_path / "run"
    seen = []
    summary = generate(cluster_config(tiny_model_dir, out), progress=lambda *args: seen.append(args[:2]))
    assert (summary.num_structures, summary.batches_done, summary.workers) == (8, 4, 2)
    assert files_of(out) == reference
    assert seen == [(2, 8), (4, 8), (6, 8), (8, 8)], "progress over the whole run, batch after batch"
    assert json.loads((out / "config.json").read_text())["cluster"] == {"workers": 2}
    assert _no_named_actors_within(10), "the workers are stopped at the end"
    # one worker, given the loaded model (sent to it) instead of loading it: the same files
    one = tmp_path / "one"
    summary = generate(cluster_config(tiny_model_dir, one, workers=1), model=tiny_model)
    assert summary.workers == 1 and files_of(one) == reference


def _no_named_actors_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while ray.util.list_named_actors() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not ray.util.list_named_actors()


@needs_ray
@pytest.mark.slow
def test_workers_killed_mid_run_lose_only_their_batch(local_ray, tiny_model_dir, reference, tmp_path):
    out = tmp_path / "run"
    killed = []

    def kill_the_workers(done, total, seconds):
        if not killed:  # after the first batch landed: both workers hold a batch in flight
            for name in ray.util.list_named_actors():
                ray.kill(ray.get_actor(name))
                killed.append(name)

    summary = generate(cluster_config(tiny_model_dir, out), progress=kill_the_workers)
    assert len(killed) == 2
    assert summary.retried_batches >= 1
    assert summary.num_structures == 8
    assert files_of(out) == reference


class Doubler:
    """A toy worker: 'runs out of host memory' on more than two items, dies on a poison value."""

    def run(self, items):
        if len(items) > 2:
            raise ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory")
        if "die" in items:
            os._exit(1)
        return [2 * x for x in items]


def halves(task):
    (items,) = task
    if len(items) <= 1:
        return None
    middle = (len(items) + 1) // 2
    return [(items[:middle],), (items[middle:],)]


@needs_ray
def test_a_task_lost_to_memory_is_split_and_results_stay_in_order(local_ray):
    tasks = [([1, 2, 3, 4, 5],), ([6],), ([7, 8, 9],)]
    with WorkerPool(Doubler, parse_cluster({"workers": 2})) as pool:
        results = list(pool.map("run", tasks, split=halves, join=lambda parts: sum(parts, [])))
        assert results == [(0, [2, 4, 6, 8, 10]), (1, [12]), (2, [14, 16, 18])]
        assert pool.retried >= 2
        with pytest.raises(RuntimeError, match="task 1 lost its worker 4 times"):
            list(pool.map("run", [([1],), (["die"],)]))


@needs_ray
def test_more_workers_than_the_cluster_holds_is_named_before_any_file(local_ray, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="3 workers with cpus_per_worker=1 need 3 CPUs, but the Ray cluster has 2"):
        generate(GenerateConfig.from_dict({**SMALL, "output": str(out), "cluster": {"workers": 3}}))
    with pytest.raises(ValueError, match="gpus_per_worker=1 need 1 GPUs, but the Ray cluster has 0"):
        WorkerPool(Doubler, parse_cluster({"workers": 1, "gpus_per_worker": 1})).start()
    assert not out.exists() and ray.is_initialized()


@needs_ray
@pytest.mark.slow
def test_driver_killed_after_its_first_batch_then_resume_gives_the_uninterrupted_run(
        local_ray, tiny_model, tiny_model_dir, tmp_path, capsys):
    settings = {**SMALL, "steps": 20, "model": str(tiny_model_dir)}  # 4 batches of ~1 s on a worker
    expected_out = tmp_path / "expected"
    generate(GenerateConfig.from_dict({**settings, "output": str(expected_out)}), model=tiny_model)
    out = tmp_path / "run"
    config_file = tmp_path / "run.yaml"
    config_file.write_text(json.dumps({**settings, "output": str(out),
                                       "cluster": {"address": "local", "workers": 2}}))
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "RAY_TMPDIR": ray_tmp,
           "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    driver = subprocess.Popen([sys.executable, "-m", "aseguide", "generate", str(config_file), "-q"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 150
        done = 0
        while time.monotonic() < deadline and driver.poll() is None:
            progress = out / "progress.json"
            done = json.loads(progress.read_text())["batches_done"] if progress.exists() else 0
            if done >= 1:
                break
            time.sleep(0.05)
        assert driver.poll() is None, f"the driver ended before it was killed: {driver.communicate()[1][-2000:]}"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        _end_processes_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    record = json.loads((out / "progress.json").read_text())
    assert 1 <= record["batches_done"] < 4, record
    # resumed through the command line on this process's Ray (another cluster setting is allowed)
    assert main(["generate", str(config_file), "--resume", "--cluster", "{workers: 2}", "-q"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("8 structures in ") and f"{record['batches_done']} batches resumed" in printed
    assert "2 Ray workers" in printed
    assert files_of(out) == files_of(expected_out)


def _end_processes_under(folder: str, wait: float = 5.0) -> None:
    """End the processes of the killed driver's Ray, by pid: those whose command line,
    environment (``RAY_TMPDIR``) or open files (their logs) name ``folder``."""
    marker = folder.encode()

    def names_folder(entry: Path) -> bool:
        if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
            return True
        return any(folder in os.readlink(fd) for fd in (entry / "fd").iterdir())

    def remaining() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if names_folder(entry):
                        pids.append(int(entry.name))
                except OSError:
                    pass
        return pids

    deadline = time.monotonic() + wait
    while remaining() and time.monotonic() < deadline:  # most share the driver's fate: give them time
        time.sleep(0.5)
    for pid in remaining():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_ray
def test_analysis_energies_on_the_cluster_equal_one_process(local_ray):
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from aseguide.analysis import analyze
    from aseguide.analysis.energy import compute_energies

    structures = [bulk("Cu", "fcc", a=a) for a in (3.5, 3.6, 3.7)] + [bulk("Au", "fcc", a=4.08),
                                                                      bulk("Cu", "fcc", a=3.6).repeat((2, 1, 1))]
    structures[-1][0].symbol = "Au"
    local = analyze(structures, calculator=EMT(), log=None)
    spread = analyze(structures, calculator=EMT(), log=None, cluster={"workers": 2})
    assert np.array_equal(spread.sets["guided"].columns["energy_per_atom"][local.sets["guided"].masks["final"]],
                          compute_energies([a for a, keep in zip(local.sets["guided"].structures,
                                                                 local.sets["guided"].masks["final"]) if keep],
                                           EMT()))
    for label, result in local.sets.items():
        assert np.array_equal(result.columns["energy_per_atom"], spread.sets[label].columns["energy_per_atom"],
                              equal_nan=True)
    assert {k: v for k, v in local.summary.items() if k != "created"} == \
        {k: v for k, v in spread.summary.items() if k != "created"}


@needs_ray
def test_a_seeded_run_on_two_workers_equals_one_process(local_ray, tiny_model, tiny_model_dir, tmp_path):
    """Each batch's worker starts every structure from its own seed crystal (run-wide index), as one process does."""
    from pathlib import Path

    seeds = Path(__file__).resolve().parents[1] / "examples" / "seeds"
    # batches of 3 with 2 seeds: the second batch starts at seed 1, so a worker that numbered
    # its batch from 0 would start from the wrong crystals
    seeded = {**SMALL, "seeds": str(seeds), "start_time": 0.5, "samples_per_seed": 1,
              "num_structures": 6, "batch_size": 3}
    seeded.pop("num_atoms")
    generate(GenerateConfig.from_dict({**seeded, "output": str(tmp_path / "local")}), model=tiny_model)
    local = files_of(tmp_path / "local")
    table = (tmp_path / "local" / "results.csv").read_text().splitlines()
    column = table[0].split(",").index("seed_index")
    assert [row.split(",")[column] for row in table[1:]] == ["0", "1", "0", "1", "0", "1"]
    generate(GenerateConfig.from_dict({**seeded, "model": str(tiny_model_dir), "output": str(tmp_path / "ray"),
                                       "cluster": {"workers": 2}}))
    assert files_of(tmp_path / "ray") == local
