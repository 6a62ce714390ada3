"""The ``aseguide`` command line.

One module per sub-command (:mod:`~aseguide.cli.analyze`, :mod:`~aseguide.cli.generate`,
:mod:`~aseguide.cli.train`), each exposing ``register(subparsers)``: the function adds
its parser with ``subparsers.add_parser(...)`` and sets ``func`` (called with the parsed
arguments, returning an exit code) through ``set_defaults``. Further commands are added
from Python with :func:`register_command`. Library code reports bad input with
``ValueError``; the command line prints it as a usage error (exit code 2).

Exit codes (stable, for scripts):

====  =========================================================================
0     success (also ``--help`` and ``--version``)
1     runtime failure (a calculation failed, a needed component is missing)
2     usage error or bad input (unknown option, bad value, missing or empty
      input, no readable structure); the message names the offending value
130   interrupted (Ctrl-C)
====  =========================================================================

Examples
--------
.. code-block:: console

    $ aseguide analyze runs/cn4 --compare runs/unguided \\
          --objective coordination:C-C:4:cutoff=1.8 --out report
    $ echo $?
    0
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from aseguide.cli import analyze, generate, train
from aseguide.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, report_errors, run_script

__all__ = ["main", "build_parser", "register_command", "run_script", "COMMANDS",
           "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "UsageError"]

#: The ``register(subparsers)`` functions of the built-in sub-commands, in help order.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], object], ...] = (
    analyze.register, generate.register, train.register)

_EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def register_command(register: Callable[[argparse._SubParsersAction], None]) -> Callable:
    """Add a sub-command from Python: ``register(subparsers)`` is called by :func:`build_parser`.

    Usable as a decorator.

    Examples
    --------
    >>> @register_command
    ... def register(subparsers):
    ...     p = subparsers.add_parser("hello", help="say hello")
    ...     p.set_defaults(func=lambda args: print("hello") or 0)
    >>> main(["hello"])
    hello
    0
    >>> _ = _EXTRA_COMMANDS.remove(register)
    """
    _EXTRA_COMMANDS.append(register)
    return register


def _version() -> str:
    return sys.modules["aseguide"].__version__  # the package root, always imported before aseguide.cli


def build_parser() -> argparse.ArgumentParser:
    """The ``aseguide`` argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="aseguide",
        description="Training-free universal guidance for crystal diffusion models, the ASE way.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage error or bad input.",
    )
    parser.add_argument("--version", action="version", version=f"aseguide {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in (*COMMANDS, *_EXTRA_COMMANDS):
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module documentation).

    Examples
    --------
    >>> main(["analyze", "/nonexistent/run"])   # prints the error to stderr
    2
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on usage errors, 0 on --help / --version
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"aseguide {args.command}" if getattr(args, "command", None) else "aseguide"
    return report_errors(lambda: args.func(args), prog)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
