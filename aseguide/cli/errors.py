"""Errors and exit codes of the ``aseguide`` command line and of scripts built on aseguide.

Exit codes (stable, for scripts):

====  =========================================================================
0     success (also ``--help`` and ``--version``)
1     runtime failure (a calculation failed, a needed component is missing)
2     usage error or bad input (unknown option, bad value, missing or empty
      input, no readable structure); the message names the offending value
130   interrupted (Ctrl-C)
====  =========================================================================

Library code reports bad input with :class:`ValueError`; :func:`report_errors` turns
it (and :class:`UsageError`) into ``PROG: error: message`` and exit code 2.

Examples
--------
>>> report_errors(lambda: int("x"), "demo")   # prints "demo: error: invalid literal ..." to stderr
2
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "report_errors",
           "run_script"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input: reported with exit code 2."""


def report_errors(call: Callable[[], int | None], prog: str) -> int:
    """``call()`` with exceptions turned into the messages and exit codes of the module documentation.

    Parameters
    ----------
    call : callable
        Runs the command; returns its exit code (``None`` means success).
    prog : str
        Program name at the start of error messages.

    Returns
    -------
    int
        The exit code.
    """
    try:
        return int(call() or EXIT_OK)
    except (UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - any runtime failure gives exit code 1
        if os.environ.get("ASEGUIDE_DEBUG"):
            traceback.print_exc()
        print(f"{prog}: error: {type(exc).__name__}: {exc} (set ASEGUIDE_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_FAILURE


def run_script(function: Callable[[], object], prog: str | None = None) -> int:
    """Run a script's ``function()`` with the messages and exit codes of ``aseguide``.

    For scripts built on aseguide (``examples/*/run.py``): a :class:`ValueError` (bad
    setting, missing model, corrupt checkpoint) prints ``PROG: error: message`` and
    gives exit code 2, any other exception a one-line message and exit code 1 (the
    traceback with ``ASEGUIDE_DEBUG=1``), Ctrl-C 130; success is 0.

    Parameters
    ----------
    function : callable
        The script's work, called without arguments.
    prog : str, optional
        Program name in messages (default: the script's file name).

    Returns
    -------
    int
        The exit code.

    Examples
    --------
    >>> run_script(lambda: int("x"), prog="demo")   # prints "demo: error: invalid literal ..." to stderr
    2
    """
    prog = prog or os.path.basename(sys.argv[0]) or "script"

    def call() -> int:
        function()
        return EXIT_OK

    return report_errors(call, prog)
