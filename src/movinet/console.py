"""How every command ends: a failure the user can fix (bad input, a missing file, a refused model,
no network) is one line, ``error: <message>``, on stderr and an exit code, never a traceback.
The ``movinet`` command and every stage script end through ``run``."""

from __future__ import annotations

import sys
from collections.abc import Callable

USER_ERRORS = (ValueError, OSError)  # LabelError, ExtractionError, config errors are ValueErrors


class UsageError(ValueError):
    """The command was asked for something that cannot be: exit 2, like argparse's own errors."""

    exit_code = 2


def report(exc: BaseException) -> None:
    print(f"error: {exc}", file=sys.stderr)


def run(main: Callable[[], int | None], code: int = 1) -> int:
    """``main()``'s exit code (None: 0); a user error is reported and exits with ``code`` (or the
    error's own ``exit_code``)."""
    try:
        result = main()
    except USER_ERRORS as exc:
        report(exc)
        return getattr(exc, "exit_code", code)
    return 0 if result is None else int(result)
