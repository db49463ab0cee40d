"""The error boundary of one git-annex request, and the yes/no of a remote's settings."""

from __future__ import annotations

import functools
import logging
import traceback

import annexremote
from annexremote import UnsupportedRequest

lgr = logging.getLogger("datalad.rdr.remote")

__all__ = ["RemoteError", "UnsupportedRequest", "request", "yes"]


class RemoteError(annexremote.RemoteError):
    """A request failed: the message goes to git-annex as one line.

    A newline would end the protocol line and git-annex would read the rest as a request,
    so newlines are written ``\\n``. The cause of ``raise ... from exc`` is appended
    (``-caused by-``, as DataLad's RemoteError writes it), unless the message already says it.
    """

    def __str__(self):
        text = super().__str__()
        seen, cause = {id(self)}, self.__cause__
        while cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            said = str(cause) or type(cause).__name__
            if said not in text:
                text = f"{text} -caused by- {said}" if text else said
            cause = cause.__cause__
        return (text or "exception with unknown cause").replace("\n", "\\n")


def request(func):
    """The error boundary of one git-annex request (as ``ora_remote.handle_errors``).

    annexremote turns anything but a RemoteError into ``ERROR`` and exits, which ends the
    whole git-annex session on one key's surprise. Here an unexpected exception fails just
    this request, with one line naming it; the traceback goes to the debug log
    (``git annex --debug``, ``git-annex-remote-rdr -l debug``)."""

    @functools.wraps(func)
    def guarded(self, *args, **kwargs):
        try:
            return func(self, *args, **kwargs)
        except (annexremote.RemoteError, UnsupportedRequest):
            raise
        except Exception as exc:
            trace = traceback.format_exc()
            lgr.debug("%s failed:\n%s", func.__name__, trace)
            try:
                self.message(trace.rstrip())
            except Exception:
                pass  # the debug line is a courtesy: the failure below is what counts
            kind = type(exc).__qualname__
            if type(exc).__module__ != "builtins":
                kind = f"{type(exc).__module__}.{kind}"
            raise RemoteError(
                f"unexpected {kind} in {func.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else '(no message)'} (see "
                f"'git annex --debug' for where; please report it)") from None

    return guarded


def yes(value: str | None, default: bool) -> bool:
    if not value:
        return default
    return value.strip().lower() in ("yes", "true", "1", "on")
