"""Step 1: read crystal structures from files and folders.

Accepted inputs, as a path or a list of paths:

* an ``aseguide generate`` run folder (``structures.extxyz`` is read; its CIFs are
  copies of the same structures and are ignored);
* a MatterGen output folder (``generated_crystals.extxyz``, or
  ``generated_crystals_cif.zip`` when the extxyz file is absent);
* any folder of structure files: extended XYZ (``.extxyz``, ``.xyz``), CIF, ASE
  trajectories (``.traj``), VASP (``POSCAR*``, ``CONTCAR*``, ``*.vasp``,
  ``*.poscar``), zip archives of CIF files and CSV tables with a ``cif`` column
  (the CDVAE benchmark format, e.g. ``carbon_24/val.csv``);
* any single file of these kinds.

Every structure comes back as an :class:`ase.Atoms` whose ``info`` holds its origin
under ``"source"`` (``"file"`` or ``"file@index"``). Files that cannot be read are
named in :attr:`StructureSet.errors`; the others are still read.

Example
-------
>>> from aseguide.analysis import read_structures
>>> run = read_structures("runs/boron")                     # doctest: +SKIP
>>> len(run), run.errors                                    # doctest: +SKIP
(1000, [])
"""

from __future__ import annotations

import csv
import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

__all__ = ["StructureSet", "read_structures", "read_run_config", "STRUCTURE_SUFFIXES"]

#: File name endings read as structure files when a folder is given.
STRUCTURE_SUFFIXES = (".extxyz", ".xyz", ".cif", ".traj", ".vasp", ".poscar", ".zip", ".csv")

_RUN_FILE = "structures.extxyz"
_MATTERGEN_XYZ = "generated_crystals.extxyz"
_MATTERGEN_ZIP = "generated_crystals_cif.zip"
_CONFIG_NAMES = ("config.yaml", "config.yml", "config.json", "run.json", "settings.json")

# CSV columns copied into atoms.info when present (numbers where possible).
_CSV_INFO_COLUMNS = (
    "material_id", "energy_per_atom", "energy", "e_above_hull", "formation_energy_per_atom",
    "formula", "loss", "seed",
)


@dataclass
class StructureSet(Sequence):
    """Structures read from disk, with the files that failed.

    Parameters
    ----------
    structures:
        The structures, ``atoms.info["source"]`` naming where each came from.
    errors:
        ``(path, message)`` for every file (or entry) that could not be read.
    files:
        Files that were read successfully.
    config:
        The run configuration found next to the structures (``config.yaml`` or
        ``config.json`` / ``run.json``), or ``None``.
    label:
        A short name for the set (the folder or file name).

    Example
    -------
    >>> from ase.build import bulk
    >>> s = StructureSet([bulk("Si")], label="si")
    >>> len(s), s[0].get_chemical_formula()
    (1, 'Si2')
    """

    structures: list[Atoms] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None
    label: str = ""

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index):  # type: ignore[override]
        return self.structures[index]

    def __iter__(self) -> Iterator[Atoms]:
        return iter(self.structures)


def _is_structure_file(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith(("poscar", "contcar")):
        return True
    return name.endswith(STRUCTURE_SUFFIXES)


def _tag(atoms: Atoms, source: str) -> Atoms:
    atoms.info.setdefault("source", source)
    calc = atoms.calc
    results = getattr(calc, "results", None) or {}
    if "energy" in results and len(atoms) and "energy_per_atom" not in atoms.info:
        # Stored energies (extxyz ``energy=``) survive symmetrisation as info entries.
        atoms.info["energy_per_atom"] = float(results["energy"]) / len(atoms)
    return atoms


def _read_cif_text(text: str, source: str) -> list[Atoms]:
    from ase.io import read

    frames = read(io.StringIO(text), format="cif", index=":")
    return frames if isinstance(frames, list) else [frames]


def _to_number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _read_csv(path: Path, limit: int | None = None) -> tuple[list[Atoms], list[tuple[str, str]]]:
    out, errors = [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "cif" not in reader.fieldnames:
            raise ValueError(
                f"CSV file {path} has no 'cif' column (columns: {reader.fieldnames}); "
                "only CDVAE-style tables with a CIF column are structure files"
            )
        for row_number, row in enumerate(reader):
            if limit is not None and len(out) >= limit:
                break
            source = f"{path}@{row_number}"
            try:
                frames = _read_cif_text(row["cif"], source)
            except Exception as exc:  # noqa: BLE001 - any parser failure is reported
                errors.append((source, f"{type(exc).__name__}: {exc}"))
                continue
            for atoms in frames:
                for key in _CSV_INFO_COLUMNS:
                    if row.get(key) not in (None, ""):
                        atoms.info[key] = _to_number(row[key])
                out.append(_tag(atoms, source))
    return out, errors


def _read_zip(path: Path) -> tuple[list[Atoms], list[tuple[str, str]]]:
    out, errors = [], []
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if not n.endswith("/"))
        for name in names:
            source = f"{path}:{name}"
            if not name.lower().endswith(".cif"):
                continue
            try:
                text = archive.read(name).decode("utf-8", errors="replace")
                frames = _read_cif_text(text, source)
            except Exception as exc:  # noqa: BLE001
                errors.append((source, f"{type(exc).__name__}: {exc}"))
                continue
            out.extend(_tag(a, source if len(frames) == 1 else f"{source}@{k}") for k, a in enumerate(frames))
    return out, errors


def _read_file(path: Path, index: str | int, limit: int | None = None) -> tuple[list[Atoms], list[tuple[str, str]]]:
    """Read one file; returns (structures, errors inside the file)."""
    from ase.io import read

    name = path.name.lower()
    if name.endswith(".csv"):
        return _read_csv(path, limit)
    if name.endswith(".zip"):
        return _read_zip(path)
    if name.endswith((".extxyz", ".xyz")):
        fmt = "extxyz"
    elif name.endswith(".cif"):
        fmt = "cif"
    elif name.endswith(".traj"):
        fmt = "traj"
    elif name.endswith((".vasp", ".poscar")) or name.startswith(("poscar", "contcar")):
        fmt = "vasp"
        index = 0
    else:
        fmt = None
    if limit is not None and index == ":" and fmt in ("extxyz", "traj"):
        index = f":{limit}"  # do not parse frames that would be thrown away
    frames = read(str(path), index=index, format=fmt)
    if isinstance(frames, Atoms):
        frames = [frames]
    frames = list(frames)
    if not frames:
        raise ValueError("no structure in the file")
    single = len(frames) == 1 and fmt in ("vasp", "cif")
    return [_tag(a, str(path) if single else f"{path}@{k}") for k, a in enumerate(frames)], []


def _files_of_folder(folder: Path, recursive: bool) -> list[Path]:
    names = {p.name for p in folder.iterdir()}
    if _RUN_FILE in names:
        return [folder / _RUN_FILE]
    if _MATTERGEN_XYZ in names:
        return [folder / _MATTERGEN_XYZ]
    if _MATTERGEN_ZIP in names:
        return [folder / _MATTERGEN_ZIP]
    walker = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walker if p.is_file() and _is_structure_file(p))


def read_run_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The run configuration stored in a run folder, or ``None`` when there is none.

    Looks for ``config.yaml``, ``config.yml``, ``config.json``, ``run.json`` or
    ``settings.json`` (first found wins).

    Example
    -------
    >>> read_run_config("/nonexistent") is None
    True
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for name in _CONFIG_NAMES:
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


def read_structures(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    index: str | int = ":",
    recursive: bool = False,
    periodic_only: bool = True,
    limit: int | None = None,
) -> StructureSet:
    """Read crystal structures from files and folders (pipeline step 1).

    Parameters
    ----------
    paths:
        A file, a folder, or several of them (see the module documentation for the
        formats).
    index:
        Frames to read from multi-frame files (extxyz, trajectories), in ASE's
        notation: ``":"`` (all, default), ``"-1"`` (last), ``"::10"``.
    recursive:
        Also read structure files in sub-folders of plain folders.
    periodic_only:
        Reject structures that are not periodic in three dimensions or have a
        zero-volume cell (reported in ``errors``).
    limit:
        Stop after this many structures (files are read in sorted order).

    Returns
    -------
    StructureSet
        The structures (``atoms.info["source"]`` set), the unreadable files in
        ``errors`` and the run configuration when present.

    Raises
    ------
    FileNotFoundError
        A path that does not exist (named).
    ValueError
        No structure file in the given folder(s) (the folder is named).

    Example
    -------
    >>> s = read_structures("../shared/data/structures")    # doctest: +SKIP
    >>> sorted({a.info["source"].rsplit("/", 1)[-1] for a in s})[:1]  # doctest: +SKIP
    ['FeB_AB_oP8_62_c_c_pymatgen_aflow_proto.cif']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no input path given")
    result = StructureSet(label=", ".join(str(p) for p in paths))
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
        if path.is_dir():
            found = _files_of_folder(path, recursive)
            if not found:
                raise ValueError(
                    f"folder {str(path)!r} holds no structure file "
                    f"(looked for {', '.join(STRUCTURE_SUFFIXES)}, POSCAR*, CONTCAR*)"
                )
            files.extend(found)
            if result.config is None:
                result.config = read_run_config(path)
        else:
            files.append(path)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit!r}")
    for path in files:
        if limit is not None and len(result.structures) >= limit:
            break
        try:
            frames, errors = _read_file(path, index, None if limit is None else limit - len(result.structures))
        except Exception as exc:  # noqa: BLE001 - name the file, keep going
            result.errors.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        result.errors.extend(errors)
        result.files.append(str(path))
        for atoms in frames:
            if periodic_only:
                problem = _periodicity_problem(atoms)
                if problem:
                    result.errors.append((atoms.info.get("source", str(path)), problem))
                    continue
            result.structures.append(atoms)
    if limit is not None:
        del result.structures[limit:]
    return result


def _periodicity_problem(atoms: Atoms) -> str | None:
    if len(atoms) == 0:
        return "structure has no atoms"
    if not np.all(atoms.pbc):
        return f"structure is not periodic in 3D (pbc={np.asarray(atoms.pbc).tolist()})"
    volume = abs(float(np.linalg.det(atoms.cell.array)))
    if volume < 1e-6:
        return f"structure has a zero-volume cell ({volume:g} Å^3)"
    return None
