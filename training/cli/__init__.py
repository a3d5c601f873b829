"""Command-line shells over the training library. `run_command` gives them one error contract: a known
error is one line `PROG: error: ...` on stderr and its exit code, Ctrl-C exits with 130."""
from __future__ import annotations

import sys
from typing import Callable


def run_command(prog: str, action: Callable[[], int | None], errors: dict, *, interrupted: str) -> int:
    """Run action(); `errors` maps an exception type (or tuple of types) to the exit code it gives.

    An OSError names its file and reason instead of Python's "[Errno N]" text.
    """
    try:
        return action() or 0
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:
        code = next((code for kinds, code in errors.items() if isinstance(exc, kinds)), None)
        if code is None:
            raise
        message = f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.filename else exc
        print(f"{prog}: error: {message}", file=sys.stderr)
        return code
