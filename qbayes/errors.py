"""User-facing errors: the CLI prints their message and exits non-zero, without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable


class QBayesError(Exception):
    """An error caused by input the user can fix (bad file, bad name, bad option, a value
    of the wrong type): the command line prints its message and exits with status 2; the
    Python API raises it (or a subclass) before anything is written.

    Examples:
        >>> import qbayes
        >>> try:
        ...     qbayes.load(n_draws=10)
        ... except qbayes.QBayesError as exc:
        ...     print(exc)
        n_draws must be an integer of at least 50, not 10
    """


def suggest(name: str, choices: Iterable[str], *, key: Callable[[str], str] | None = None) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close. With
    ``key``, names are compared by their keys (e.g. case and punctuation ignored) and the
    choice is shown as spelled."""
    spelled = {(key or str)(str(c)): str(c) for c in choices}
    close = difflib.get_close_matches((key or str)(str(name)), list(spelled), n=1, cutoff=0.6)
    return f" (did you mean '{spelled[close[0]]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> QBayesError:
    """Error for an unknown registry name, with a close-match suggestion and the options."""
    choices = sorted(str(c) for c in choices)
    return QBayesError(f"unknown {kind} '{name}'{suggest(name, choices)}; known: {', '.join(choices)}")
