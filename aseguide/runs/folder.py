"""The run folder of ``aseguide generate``: written and read in this one place.

A run folder holds:

``structures.extxyz``
    every structure (``atoms.info``: loss, descriptors, seed, batch, settings);
``cifs/gen_<index>.cif``
    one CIF per structure;
``results.csv``
    one row per structure: index, batch, seed, formula, number of atoms, loss,
    satisfied, finite, split and one column per objective part;
``config.json``
    the resolved configuration; ``progress.json`` the batches done.

``progress.json`` is the single source of truth of the run folder: it is written
(atomically, through a temporary file and a rename) before the first structure and
after each batch, and records how many structures are done and the size of
``structures.extxyz`` and ``results.csv`` at that point. A run killed at any instruction
leaves a folder that a resumed run continues exactly: bytes a killed batch appended
after the record are cut, temporary files are removed, and the batch is generated again
with its own seed (CIFs are written through a rename too). All files follow the umask.

:class:`RunFolder` writes, checks and resumes a folder; :func:`read_run_config` and
:func:`run_structures_file` are what the analysis reads back.

Examples
--------
>>> import tempfile
>>> from ase.build import bulk
>>> folder = RunFolder(tempfile.mkdtemp())
>>> folder.prepare({})
>>> folder.write_config({"seed": 0})
>>> folder.append_batch([bulk("Si")], [{"index": 0, "formula": "Si2"}], first_index=0)
>>> folder.save_progress(batches_done=1, structures=1, batches_total=1, batch_size=1)
>>> read_run_config(folder.path), run_structures_file(folder.path).name
({'seed': 0}, 'structures.extxyz')
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ase import Atoms

from aseguide.runs.config import GenerateConfig

__all__ = ["RunFolder", "read_run_config", "run_structures_file", "STRUCTURES_FILE", "RESULTS_FILE",
           "CONFIG_FILE", "PROGRESS_FILE", "CONFIG_NAMES"]

#: The structures of a run, one extxyz frame each.
STRUCTURES_FILE = "structures.extxyz"
#: One row per structure.
RESULTS_FILE = "results.csv"
#: The resolved configuration.
CONFIG_FILE = "config.json"
#: The record of the batches done (the single source of truth).
PROGRESS_FILE = "progress.json"
#: Files appended batch after batch; their recorded sizes are in ``progress.json``.
DATA_FILES = (STRUCTURES_FILE, RESULTS_FILE)
#: Settings a resumed run may change: they do not change the structures already written.
RESUMABLE_CHANGES = ("num_structures", "output", "cluster")
#: Names under which a run configuration is looked for when a folder is read (first found wins).
CONFIG_NAMES = ("config.yaml", "config.yml", CONFIG_FILE, "run.json", "settings.json")


def _atomic_append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _tmp_name(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _write_atomic(path: Path, text: str | bytes) -> None:
    """Replace ``path`` by ``text`` through ``<path>.tmp`` and a rename: never a half-written file.

    The file is created with :func:`open`, so its permissions follow the umask like every
    other file of the run folder.
    """
    tmp = _tmp_name(path)
    with open(tmp, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    _write_atomic(path, json.dumps(data, indent=2, default=str))


def _remove_stale_tmp(output: Path) -> None:
    """Remove temporary files left by a run killed between writing and renaming one."""
    for pattern in ("config.json*.tmp", "progress.json*.tmp", "cifs/gen_*.cif*.tmp"):
        for stale in output.glob(pattern):
            stale.unlink(missing_ok=True)


def _csv_header(path: Path) -> list[str] | None:
    """Column names of an existing CSV file (rows appended later keep its columns), else ``None``."""
    if not path.exists():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), None)


def _stored_config(path: Path) -> dict[str, Any]:
    """The configuration stored in a run folder, settings added since then at their defaults."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    return {**{f.name: f.default for f in dataclasses.fields(GenerateConfig)
               if f.default is not dataclasses.MISSING}, **previous}


class RunFolder:
    """The output folder of one generation run.

    Parameters
    ----------
    path : str or os.PathLike
        The folder (created by :meth:`prepare`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.progress_file = self.path / PROGRESS_FILE
        self.config_file = self.path / CONFIG_FILE

    def _where(self) -> str:
        return repr(str(self.path))

    def holds_run(self) -> bool:
        """Whether the folder holds a run (a ``progress.json``)."""
        return self.progress_file.exists()

    def check_new(self) -> None:
        """Refuse a folder that holds data files but no ``progress.json`` (their content is unknown)."""
        present = [name for name in DATA_FILES if (self.path / name).exists()]
        if present:
            raise ValueError(f"output folder {self._where()} holds {present} but no progress.json, so what they "
                             "contain is unknown; choose another output (or remove them)")

    def read_progress(self, config: GenerateConfig, resume: bool) -> dict[str, Any]:
        """The progress record of the run to continue (``{}`` for a new folder).

        Raises
        ------
        ValueError
            A folder holding a run without ``resume``; settings that differ from the
            stored ones; fewer structures asked than are done; a data file shorter than
            recorded; data files without a record.
        """
        if not self.holds_run():
            self.check_new()
            return {}
        if not resume:
            raise ValueError(f"output folder {self._where()} already holds a run; use --resume to continue "
                             "it or choose another output")
        previous = _stored_config(self.config_file)
        current = json.loads(json.dumps(config.todict(), default=str))
        differing = sorted(k for k in set(previous) | set(current)
                           if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))
        if differing:
            raise ValueError(f"cannot resume {self._where()}: settings differ from the stored run: {differing}")
        record = json.loads(self.progress_file.read_text())
        produced = int(record.get("structures", 0))
        if produced > config.num_structures:
            raise ValueError(f"cannot resume {self._where()} with num_structures={config.num_structures}: "
                             f"it already holds {produced} structures")
        for name in DATA_FILES:
            target = self.path / name
            size = int(record.get("sizes", {}).get(name, 0))
            actual = target.stat().st_size if target.exists() else 0
            if actual < size:
                raise ValueError(f"cannot resume {self._where()}: {name} has {actual} bytes but progress.json "
                                 f"records {size} for {produced} structures; the file was cut or replaced")
        return record

    def prepare(self, record: Mapping[str, Any]) -> None:
        """Create the folder, remove stale temporary files and cut what a killed batch appended after ``record``."""
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "cifs").mkdir(exist_ok=True)
        _remove_stale_tmp(self.path)
        if not record:
            return
        for name in DATA_FILES:
            target = self.path / name
            size = int(record.get("sizes", {}).get(name, 0))
            if target.exists() and target.stat().st_size > size:
                with open(target, "r+b") as handle:
                    handle.truncate(size)
                    handle.flush()
                    os.fsync(handle.fileno())

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Store the resolved configuration (``config.json``)."""
        _write_json(self.config_file, config)

    def save_progress(self, *, batches_done: int, structures: int, batches_total: int, batch_size: int) -> None:
        """Record the batches done and the sizes of the data files now (``progress.json``)."""
        sizes = {name: (self.path / name).stat().st_size if (self.path / name).exists() else 0
                 for name in DATA_FILES}
        _write_json(self.progress_file, {"batches_done": batches_done, "structures": structures,
                                         "batches_total": batches_total, "batch_size": batch_size, "sizes": sizes})

    def append_batch(self, structures: Sequence[Atoms], rows: Sequence[Mapping[str, Any]], first_index: int) -> None:
        """Write one batch: a CIF per structure, then append to ``structures.extxyz`` and ``results.csv``."""
        from ase.io import write

        text = io.StringIO()
        write(text, list(structures), format="extxyz")
        for offset, atoms in enumerate(structures):
            cif = io.BytesIO()
            write(cif, atoms, format="cif")
            _write_atomic(self.path / "cifs" / f"gen_{first_index + offset}.cif", cif.getvalue())
        _atomic_append(self.path / STRUCTURES_FILE, text.getvalue())
        table = io.StringIO()
        results = self.path / RESULTS_FILE
        fieldnames = _csv_header(results) or list(rows[0])
        writer = csv.DictWriter(table, fieldnames=fieldnames, extrasaction="ignore")
        if not results.exists() or results.stat().st_size == 0:
            writer.writeheader()
        writer.writerows(rows)
        _atomic_append(results, table.getvalue())


def run_structures_file(folder: str | os.PathLike) -> Path | None:
    """The structures file of an ``aseguide generate`` run folder, or ``None`` when ``folder`` is none.

    Examples
    --------
    >>> run_structures_file("/nonexistent") is None
    True
    """
    path = Path(folder) / STRUCTURES_FILE
    return path if path.is_file() else None


def read_run_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run configuration stored in a run folder, or ``None`` when there is none.

    Looks for ``config.yaml``, ``config.yml``, ``config.json``, ``run.json`` or
    ``settings.json`` (first found wins).

    Examples
    --------
    >>> read_run_config("/nonexistent") is None
    True
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for name in CONFIG_NAMES:
        path = folder / name
        if path.is_file():
            try:
                if name.endswith((".yaml", ".yml")):
                    import yaml

                    data = yaml.safe_load(path.read_text())
                else:
                    data = json.loads(path.read_text())
            except Exception:  # noqa: BLE001 - a broken config does not stop the analysis
                return None
            return data if isinstance(data, dict) else None
    return None
