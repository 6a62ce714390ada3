"""Writers for generated crystals: whole batches per frame, final structures to extxyz / CIF.

Examples
--------
>>> import os, tempfile
>>> import ase.io
>>> from ase.build import bulk
>>> from aseguide.sampling.writers import write_structures
>>> path = os.path.join(tempfile.mkdtemp(), "out.extxyz")
>>> write_structures(path, [bulk("Si"), bulk("C", "diamond", a=3.57)])
2
>>> len(ase.io.read(path, ":"))
2
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase import Atoms

__all__ = ["FrameWriter", "write_structures", "finite_structure"]


def finite_structure(atoms: Atoms) -> bool:
    """Whether an ``Atoms`` has only finite positions and cell."""
    return bool(np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all())


def _format(path: str | os.PathLike, format: str | None) -> str:
    from ase.io.formats import filetype, ioformats

    fmt = format or filetype(str(path), read=False)
    if fmt not in ioformats:
        raise ValueError(f"unknown file format {fmt!r} for {path}")
    if ioformats[fmt].single:
        raise ValueError(f"format {fmt!r} stores a single structure; use extxyz, cif or traj for {path}")
    return fmt


def write_structures(
    path: str | os.PathLike, images: Sequence[Atoms], format: str | None = None, skip_nonfinite: bool = True
) -> int:
    """Write structures to one multi-structure file (extxyz, CIF, traj, ...).

    The format follows the file name unless ``format`` is given. Structures with
    non-finite coordinates are skipped with a warning (never written as garbage) unless
    ``skip_nonfinite=False``. Returns the number of structures written.

    Examples
    --------
    >>> import os, tempfile
    >>> from ase.build import bulk
    >>> write_structures(os.path.join(tempfile.mkdtemp(), "x.cif"), [bulk("Si")])
    1
    """
    import ase.io

    fmt = _format(path, format)
    images = list(images)
    keep = [a for a in images if not skip_nonfinite or finite_structure(a)]
    if len(keep) < len(images):
        warnings.warn(f"{len(images) - len(keep)} structure(s) with non-finite coordinates not written to {path}",
                      stacklevel=2)
    ase.io.write(path, keep, format=fmt)
    return len(keep)


class FrameWriter:
    """Append every structure of a batch to a file or a writer object, frame after frame.

    Parameters
    ----------
    target : str, os.PathLike or writer
        A path (``.traj`` -> :class:`ase.io.Trajectory`; otherwise any multi-image ASE
        format such as extxyz) or an object with ``write(atoms)`` (e.g. an open ASE
        ``Trajectory``, which the caller keeps and closes).
    format : str, optional
        ASE format name, guessed from the path when ``None``.

    Examples
    --------
    >>> import os, tempfile
    >>> import ase.io
    >>> from ase.build import bulk
    >>> path = os.path.join(tempfile.mkdtemp(), "frames.traj")
    >>> with FrameWriter(path) as w:
    ...     w.write([bulk("Si"), bulk("Ge")])
    ...     w.write([bulk("Si"), bulk("Ge")])
    >>> len(ase.io.read(path, ":"))
    4
    """

    def __init__(self, target, format: str | None = None) -> None:
        self._owned = not hasattr(target, "write")
        self._fd = None
        if not self._owned:
            self._writer = target
            return
        import ase.io

        self.path = Path(target)
        self.format = _format(self.path, format)
        if self.format == "traj":
            self._writer = ase.io.Trajectory(str(self.path), "w")
        else:
            self._fd = open(self.path, "w")
            fd, fmt = self._fd, self.format

            class _Text:
                def write(self, atoms):
                    ase.io.write(fd, atoms, format=fmt)
                    fd.flush()

            self._writer = _Text()

    def write(self, images: Sequence[Atoms]) -> None:
        """Append the structures ``images`` (one frame of a batch)."""
        for atoms in images:
            self._writer.write(atoms)

    def close(self) -> None:
        """Close the file if this writer opened it."""
        if self._owned:
            if self._fd is not None:
                self._fd.close()
            elif hasattr(self._writer, "close"):
                self._writer.close()

    def __enter__(self) -> "FrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
