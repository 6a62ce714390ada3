"""Run folders survive a kill at any point: real SIGKILLs of a forked run, then resume.

Each window is a real ``SIGKILL`` of a real (forked) process at one file operation of
:func:`aseguide.runs.generate.generate`: before each rename (``config.json``, every
``progress.json`` record, every CIF), in the middle of each append (half the text
written) and right after each append (the batch written but not recorded). The run is
then resumed and must give exactly the files of an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import stat
import sys

import pytest
from ase.io import read

import aseguide.runs.folder as folder_module
from aseguide.cli import main
from aseguide.generate import GenerateConfig, generate

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork to kill a real process")

SMALL = dict(num_structures=6, batch_size=2, num_atoms=4, steps=3, seed=1,
             objectives=[{"type": "VolumePerAtom", "target": 12.0}],
             guidance={"recurrence": 1, "backward_strength": 0.05})
#: renames of a 6-structure run in batches of 2: config, first record, then per batch 2 CIFs + record
RENAMES = 2 + 3 * 3
#: appends: structures.extxyz and results.csv per batch
APPENDS = 2 * 3


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def run_killed(config: GenerateConfig, model, *, operation: str, when: int, resume: bool = False) -> None:
    """Run ``generate`` in a forked child that SIGKILLs itself at its ``when``-th ``operation``.

    ``operation``: ``"rename"`` (killed before the rename happens), ``"append-half"``
    (killed after writing half of the text) or ``"append"`` (killed after the append).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            signal.alarm(300)  # a child that hangs dies (SIGALRM) and the test fails instead of waiting
            calls = {"n": 0}
            if operation == "rename":
                real_replace = os.replace

                def replace(src, dst, *args, **kwargs):
                    calls["n"] += 1
                    if calls["n"] == when:
                        _kill_self()
                    return real_replace(src, dst, *args, **kwargs)

                os.replace = replace
            else:
                real_append = folder_module._atomic_append

                def append(path, text):
                    calls["n"] += 1
                    if calls["n"] == when:
                        if operation == "append-half":
                            with open(path, "a", encoding="utf-8") as handle:
                                handle.write(text[: len(text) // 2])
                        else:
                            real_append(path, text)
                        _kill_self()
                    return real_append(path, text)

                folder_module._atomic_append = append
            generate(config, model=model, resume=resume)
        finally:
            os._exit(17)  # reached only when the kill point was never hit
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, \
        f"the child was not killed at {operation} #{when} (status {status})"


def snapshot(out) -> dict[str, bytes]:
    """Every file of a run folder (config.json without its output path)."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            files[str(path.relative_to(out))] = path.read_bytes()
    config = json.loads(files.pop("config.json"))
    config.pop("output")
    files["config.json"] = json.dumps(config, sort_keys=True).encode()
    return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, one_thread):
    out = tmp_path_factory.mktemp("reference") / "run"
    summary = generate(GenerateConfig.from_dict({**SMALL, "output": str(out)}), model=tiny_model)
    assert summary.num_structures == 6
    return snapshot(out)


WINDOWS = ([("rename", n) for n in range(1, RENAMES + 1)]
           + [("append-half", n) for n in range(1, APPENDS + 1)]
           + [("append", n) for n in range(1, APPENDS + 1)])


@pytest.mark.parametrize("operation, when", WINDOWS)
def test_kill_at_any_file_operation_then_resume_gives_the_uninterrupted_run(
        tmp_path, tiny_model, reference, operation, when):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "output": str(out)})
    run_killed(config, tiny_model, operation=operation, when=when)
    summary = generate(config, model=tiny_model, resume=True)
    assert summary.num_structures == 6
    assert not list(out.rglob("*.tmp")), "a temporary file survived the resume"
    got = snapshot(out)
    assert sorted(got) == sorted(reference)
    for name in reference:
        assert got[name] == reference[name], f"{name} differs from the uninterrupted run"
    assert [a.info["index"] for a in read(out / "structures.extxyz", ":")] == list(range(6))


def test_kill_during_a_resumed_run_then_resume_again(tmp_path, tiny_model, reference):
    out = tmp_path / "run"
    config = GenerateConfig.from_dict({**SMALL, "output": str(out)})
    run_killed(config, tiny_model, operation="append", when=3)     # after batch 1 (batch 2 half done)
    run_killed(config, tiny_model, operation="rename", when=4, resume=True)
    assert generate(config, model=tiny_model, resume=True).num_structures == 6
    assert snapshot(out) == reference


def test_folder_with_results_but_no_record_is_refused(tmp_path, tiny_model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "structures.extxyz").write_text("")
    with pytest.raises(ValueError, match="structures.extxyz.*no progress.json"):
        generate(GenerateConfig.from_dict({**SMALL, "output": str(out)}), model=tiny_model, resume=True)


def test_resume_with_more_structures_generates_them_and_reports_what_is_on_disk(tmp_path, tiny_model, capsys):
    out = tmp_path / "run"
    first = generate(GenerateConfig.from_dict({**SMALL, "batch_size": 4, "output": str(out)}), model=tiny_model)
    assert (first.num_structures, first.batches_done) == (6, 2)              # batches of 4 + 2
    more = GenerateConfig.from_dict({**SMALL, "batch_size": 4, "num_structures": 9, "output": str(out)})
    summary = generate(more, model=tiny_model, resume=True)
    images = read(out / "structures.extxyz", ":")
    assert summary.num_structures == len(images) == 9
    assert [a.info["index"] for a in images] == list(range(9))
    assert [a.info["batch"] for a in images][6:] == [2, 2, 2]
    assert [int(r["index"]) for r in csv.DictReader(open(out / "results.csv"))] == list(range(9))
    assert len(list((out / "cifs").glob("gen_*.cif"))) == 9
    assert json.loads((out / "progress.json").read_text())["structures"] == 9
    # the command line prints the number on disk, also when nothing is left to do
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({**SMALL, "batch_size": 4, "num_structures": 9, "model": "tiny-random"}))
    assert main(["generate", str(config), "--output", str(out), "--resume", "-q"]) == 0
    assert capsys.readouterr().out.startswith("9 structures in ")
    with pytest.raises(ValueError, match="already holds 9 structures"):
        generate(GenerateConfig.from_dict({**SMALL, "batch_size": 4, "num_structures": 5, "output": str(out)}),
                 model=tiny_model, resume=True)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_file_of_the_run_folder_follows_the_umask(tmp_path, tiny_model, umask):
    old = os.umask(umask)
    try:
        out = tmp_path / "run"
        generate(GenerateConfig.from_dict({**SMALL, "num_structures": 2, "output": str(out)}), model=tiny_model)
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert {"config.json", "progress.json", "structures.extxyz", "results.csv", "cifs/gen_0.cif"} <= set(modes)
    assert modes == {name: 0o666 & ~umask for name in modes}
