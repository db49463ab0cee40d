"""Embargo: the record and its DOI public now, the bundles closed until a date.

With ``access: embargoed`` in the metadata file (``embargo_until``, ``embargo_reason``,
``after_embargo``), the export

- checks, before a draft is made or a byte is sent, that the server allows embargoes and
  that this one ends within the server's maximum (:func:`check`);
- after the bundles are registered, embargoes them through the server's embargo API
  (:func:`apply`); the README and the documentation stay public. A later export keeps the
  embargo, changes it, or lifts it as the file says, without sending a byte again.

At the date the server opens the bundles by itself: public ones (``after_embargo: open``)
to everyone, restricted ones (``after_embargo: restricted``) on request, as any restricted
file. Dataverse lets the depositor change an embargo only while the bundles are in no
published version; afterwards only a superuser (RDR support) may.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Iterator

from . import metadata
from .dataverse import Dataverse, DataverseError, EmbargoRefused
from .dataverse_records import Embargo
from .metadata.problems import MetadataError

log = logging.getLogger("datalad.rdr.embargo")


def wanted(meta) -> Embargo | None:
    """The embargo the metadata file asks for, None for none."""
    if meta is None or meta.access != "embargoed":
        return None
    return Embargo(meta.embargo_until, meta.embargo_reason or "")


def until(meta) -> dt.date | None:
    embargo = wanted(meta)
    return embargo.date_available if embargo else None


def restricted(meta) -> bool:
    """Bundles are restricted files unless the data are open: now (``access: open``) or
    from the embargo's end (``after_embargo: open``; the embargo closes them until then)."""
    return (meta.after_embargo if meta.access == "embargoed" else meta.access) != "open"


def check(client: Dataverse, meta, dataset: Path, commit: str, server: str) -> None:
    """The server allows embargoes, and this one ends within its maximum: else a
    MetadataError with the cause and what to do (the metadata file's own line for a date
    beyond the maximum)."""
    if wanted(meta) is None:
        return
    months = client.max_embargo_months()
    log.debug("%s allows embargoes of %s months", server,
              "any number of" if months is None else months)
    if months == 0:
        raise MetadataError(
            f"{metadata.METADATA}: 'access: embargoed', but {server} does not allow "
            f"embargoes (its :MaxEmbargoDurationInMonths is 0 or not set); ask its "
            f"administrators to allow them, or set 'access: restricted' (or open)",
            field="access")
    if months is not None:
        metadata.load(dataset, commit, max_embargo_months=months)  # raises when beyond


def apply(dataset: Path, client: Dataverse, pid: str, meta, records) -> Iterator[dict]:
    """Each bundle's embargo on the server made what the metadata file says; one result
    per change (none when every bundle has it already)."""
    embargo = wanted(meta)
    entries = {e.file_id: e for e in client.latest_files(pid)[1]}
    to_set, to_lift = [], []
    for label, file_id in (file for record in records for file in record.files):
        entry = entries.get(file_id)  # a bundle, or each of its split volumes
        if entry is None:
            continue
        now = entry.embargo
        if embargo is not None and now != embargo:
            to_set.append((label, file_id))
        elif embargo is None and now is not None and now.date_available > dt.date.today():
            to_lift.append((label, file_id))  # one that has ended is left as it is: the
            # server lists it still, and lets nobody but a superuser touch a published one
    names = ", ".join(label for label, _ in to_set or to_lift)
    try:
        if to_set:
            client.set_embargo(pid, [fid for _, fid in to_set], embargo.date_available,
                               embargo.reason)
            yield _result(dataset, "ok", f"under embargo until "
                          f"{embargo.date_available.isoformat()} ({embargo.reason}): "
                          f"{names}; nothing sent again", pid=pid,
                          embargo=embargo.date_available.isoformat())
        elif to_lift:
            client.unset_embargo(pid, [fid for _, fid in to_lift])
            yield _result(dataset, "ok", f"embargo lifted, as {metadata.METADATA} no longer "
                          f"has one: {names}; nothing sent again", pid=pid, embargo=None)
    except EmbargoRefused as exc:
        yield _result(dataset, "error", _refusal(exc, embargo, names, client.url), pid=pid)
    except DataverseError as exc:
        yield _result(dataset, "error", f"embargo of {names}: {exc}", pid=pid)


def _refusal(exc: EmbargoRefused, embargo: Embargo | None, names: str, server: str) -> str:
    change = (f"embargo until {embargo.date_available.isoformat()}" if embargo
              else "lifting the embargo")
    if exc.published:
        return (f"{change} refused by {server} for {names} ({exc.message}): these bundles "
                f"are published, and Dataverse lets only a superuser change their embargo; "
                f"ask RDR support to do it, or restore the embargo in {metadata.METADATA}")
    return (f"{change} refused by {server} for {names}: {exc.message}; fix "
            f"'embargo_until' in {metadata.METADATA} and export again")


def _result(dataset: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-embargo", "path": str(dataset), "type": "dataset",
            "status": status, "message": message, **extra}
