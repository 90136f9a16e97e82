"""What a command prints, and how one command runs: its result on stdout, a failure as one line.

:func:`run` executes one command's coroutine under Trio and turns any domain error
(:data:`~agentkeys.errors.DOMAIN_ERRORS`: agentkeys' or attest's) into exactly one line on
stderr (``agentkeys: <what happened>; <what to do>``, or ``{error, reason}`` with
``--json``) and the exit code of its class (agentkeys.cli._errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from agentkeys.cli._errors import EXIT_INTERRUPTED, EXIT_OK, describe_error, exit_code_for
from agentkeys.errors import DOMAIN_ERRORS, DomainError

__all__ = [
    "add_output_options",
    "emit",
    "one_line",
    "run",
]


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object on stdout instead of text."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object (for scripts) instead of text"
    )


def emit(args: argparse.Namespace, data: Mapping[str, Any], lines: Sequence[str]) -> None:
    """Print the result: ``data`` as JSON with ``--json``, else the text ``lines``."""
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=True))
    else:
        for line in lines:
            print(line)
    sys.stdout.flush()


def _leaf_error(exc: BaseException) -> DomainError | None:
    """The domain error inside ``exc`` (itself, or the first leaf of an exception group)."""
    if isinstance(exc, DOMAIN_ERRORS):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf_error(inner)
            if found is not None:
                return found
    return None


def _only_interrupts(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_interrupts(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def run(args: argparse.Namespace, command: Callable[[], Awaitable[None]]) -> int:
    """Run one command's coroutine; failures become one stderr line and an exit code.

    Errors that are not agentkeys' own propagate (a traceback is a bug to report).
    """
    try:
        trio.run(command)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        if not _only_interrupts(exc):
            error = _leaf_error(exc)
            if error is None:
                raise
            return _report(args, error)
        print(
            "agentkeys: interrupted; nothing was submitted unless a tx hash was printed",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except DOMAIN_ERRORS as exc:
        return _report(args, exc)
    return EXIT_OK


def one_line(text: object) -> str:
    """``text`` on one line (a peer's reason may hold newlines); never shortened."""
    return " ".join(str(text).split())


def _report(args: argparse.Namespace, exc: DomainError) -> int:
    message = describe_error(exc)
    if getattr(args, "json", False):
        code = getattr(exc, "code", None)  # a refusing broker's/worker's own code
        error = code if isinstance(code, str) and code else exc.error
        print(json.dumps({"error": error, "reason": message}), file=sys.stderr)
    else:
        print(f"agentkeys: {message}", file=sys.stderr)
    return exit_code_for(exc)
