"""ASE plugin of aseguide: a plain ``ase.io.read`` rebuilds aseguide restraints.

ASE reads the constraints of a ``.traj`` file by looking their names up in
:mod:`ase.constraints` and raises a bare ``ValueError`` for a name it does not know.
This module is loaded by ASE itself, through aseguide's ``ase.ioformats`` entry point,
whenever :mod:`ase.io` is imported, also in a process that never imports aseguide. It
stays light (no torch): it only adds one placeholder per aseguide objective name to
:mod:`ase.constraints`; the first placeholder called imports :mod:`aseguide.constraints`,
which puts the real classes in their place, and builds the restraint.

The entry point's object is :data:`aseguide_run`, a small IO format reading the
structures of an aseguide run folder: ``ase.io.read("runs/demo", ":", format="aseguide-run")``.

Example
-------
>>> import ase.constraints
>>> "VolumePerAtom" in ase.constraints.__all__
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ase.utils.plugins import ExternalIOFormat

__all__ = ["OBJECTIVE_NAMES", "register_placeholders", "aseguide_run", "read_aseguide_run"]

#: Class names of the aseguide objectives that can be stored as ASE constraints.
OBJECTIVE_NAMES = ("VolumePerAtom", "Volume", "Coordination", "CoordinationDistribution", "MinDistance",
                   "Combined", "EnergyAboveHull")


def _placeholder(name: str) -> Callable[..., Any]:
    def build(**kwargs: Any) -> Any:
        import aseguide.constraints as constraints  # registers the real classes with ase.constraints

        return getattr(constraints, name)(**kwargs)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"Placeholder of aseguide.constraints.{name}: imports aseguide and builds it."
    build._aseguide_placeholder = True  # type: ignore[attr-defined]
    return build


def register_placeholders() -> None:
    """Add a placeholder to :mod:`ase.constraints` for each aseguide objective name it lacks."""
    import ase.constraints

    for name in OBJECTIVE_NAMES:
        if hasattr(ase.constraints, name):
            continue
        setattr(ase.constraints, name, _placeholder(name))
        if name not in ase.constraints.__all__:
            ase.constraints.__all__.append(name)


def read_aseguide_run(filename: str, index: Any = -1) -> Iterator:
    """Structures of an aseguide run folder (its ``structures.extxyz``) or of that file."""
    from ase.io import read

    path = Path(filename)
    if path.is_dir():
        path = path / "structures.extxyz"
    images = read(path, index=index, format="extxyz")
    yield from (images if isinstance(images, list) else [images])


#: The object of the ``ase.ioformats`` entry point ``aseguide-run``.
aseguide_run = ExternalIOFormat(desc="aseguide run folder (structures.extxyz)", code="+S", module="aseguide_ase")

register_placeholders()
