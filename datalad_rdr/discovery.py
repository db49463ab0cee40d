"""Server discovery: what this Dataverse installation allows, found out by asking it.

``datalad rdr-export --check-server`` asks the server what no public source settles for RDR
(docs/server-discovery.rst): its version; whether direct upload works for the dataset; whether
its store wants the signed ``x-amz-tagging`` header; the part size and URL lifetime; the
largest file it accepts; whether downloads are redirected to the store or streamed through
the server; whether this account may publish or must submit for review; the collection's
required fields and vocabularies; the licenses; the file-count limit; the maximum embargo.

Nothing that stays on the server is changed: upload tickets are only asked for (a ticket for
a multipart size opens a multipart upload, aborted at once; no byte is sent), and a download
asks for one byte of a file that is there already. Facts that need a dataset are unknown
until there is one (``--pid``, or the PID of the last export).

The facts are kept per server in ``.git/datalad-rdr/server-<host>.json``; :func:`adjust`
makes the export act on them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from .dataverse import Dataverse, DataverseError
from .sizes import human as show_size
from .upload import Ticket

log = logging.getLogger("datalad.rdr.discovery")

#: Swift's s3api accepts at most this many parts per upload (max_upload_part_num; fidelity
#: row 7): no file beyond that many parts can be stored, whatever Dataverse allows.
MAX_PARTS = 1000
#: The largest-file search stops when its bounds are this close (no byte-exact limit needed
#: to size bundles).
PRECISION = 1024 * 1024


@dataclass
class Fact:
    name: str
    label: str
    value: object  # None: unknown
    shown: str
    note: str = ""


def discover(client: Dataverse, pid: str | None = None,
             collection: str | None = None) -> dict[str, Fact]:
    """Every fact, in the order of the table."""
    version = client.version()
    facts = [Fact("version", "Dataverse version", version, version)]
    facts += _upload_facts(client, pid)
    facts.append(_download_fact(client, pid))
    facts.append(_publish_fact(client, pid))
    facts += _metadata_facts(client, collection)
    facts.append(_count_fact(client, pid, collection))
    facts.append(_embargo_fact(client))
    return {f.name: f for f in facts}


# -- direct upload -----------------------------------------------------------------------
def _unknown(name: str, label: str, why: str) -> Fact:
    return Fact(name, label, None, f"unknown ({why})")


_NEEDS_DATASET = "needs a dataset: give --pid, or export once"


def _upload_facts(client: Dataverse, pid: str | None) -> list[Fact]:
    names = [("direct_upload", "direct upload"), ("tagging", "object tagging"),
             ("part_size", "part size"), ("url_lifetime", "upload URL lifetime"),
             ("largest_file", "largest accepted file")]
    if not pid:
        return [_unknown(n, label, _NEEDS_DATASET) for n, label in names]
    try:
        ticket = Ticket(client.upload_urls(pid, 1), time.time())
    except DataverseError as exc:
        if exc.status == 404 and "direct upload" in exc.message.lower():
            return [Fact("direct_upload", "direct upload", False,
                         f"no: {exc.message}")] + [
                _unknown(n, label, "no direct upload") for n, label in names[1:]]
        if "number of files" in exc.message.lower():
            return [Fact("direct_upload", "direct upload", True, "yes, but the dataset is "
                         f"full: {exc.message}")] + [
                _unknown(n, label, "the dataset is full") for n, label in names[1:]]
        raise
    part = ticket.part_size
    largest, shown = largest_file(client, pid, part)
    return [
        Fact("direct_upload", "direct upload", True, "yes"),
        Fact("tagging", "object tagging", ticket.signs_tagging,
             "yes: uploads send the signed x-amz-tagging header" if ticket.signs_tagging
             else "no (the store refuses x-amz-tagging, as OpenStack Swift does)"),
        Fact("part_size", "part size", part, show_size(part)),
        Fact("url_lifetime", "upload URL lifetime", ticket.lifetime,
             f"{ticket.lifetime} s ({ticket.lifetime / 60:.0f} min): a bundle must be sent "
             f"within it"),
        Fact("largest_file", "largest accepted file", largest, shown),
    ]


def _probe(client: Dataverse, pid: str, size: int) -> str | None:
    """None if the server hands out an upload ticket for ``size`` bytes, else its reason.
    A multipart ticket is aborted at once: nothing is left in the store."""
    try:
        ticket = Ticket(client.upload_urls(pid, size), time.time())
    except DataverseError as exc:
        if exc.status == 400:
            return exc.message
        raise
    if ticket.multipart:
        client.abort_multipart(ticket.target.abort)
    return None


def largest_file(client: Dataverse, pid: str, part_size: int) -> tuple[int, str]:
    """The largest file the server would take, by its own ``uploadurls`` refusals (no byte
    is sent): the named limit when the refusal names one, else a binary search."""
    ceiling = MAX_PARTS * part_size
    reason = _probe(client, pid, ceiling)
    if reason is None:
        return ceiling, (f"{show_size(ceiling)} or more: no limit below {MAX_PARTS} parts "
                         f"of {show_size(part_size)}, the most an OpenStack Swift store "
                         f"takes")
    named = re.search(r"(\d+) bytes", reason)
    if named and _probe(client, pid, int(named.group(1))) is None:
        # the server registers a file only if it is smaller than the limit
        # (IngestServiceBean: confirmedFileSize < limit; fidelity row 14)
        limit = int(named.group(1)) - 1
        return limit, f"{show_size(limit)} ({limit} bytes; the server says: {reason})"
    low, high = 1, ceiling  # low is accepted, high refused
    while high - low > PRECISION:
        middle = (low + high) // 2
        if _probe(client, pid, middle) is None:
            low = middle
        else:
            high = middle
    return low, f"about {show_size(low)} (searched; the server says: {reason})"


# -- downloads, publishing ---------------------------------------------------------------
def _download_fact(client: Dataverse, pid: str | None) -> Fact:
    name, label = "download_redirect", "downloads"
    if not pid:
        return _unknown(name, label, _NEEDS_DATASET)
    files = client.current_files(pid)
    if not files:
        return _unknown(name, label, "the dataset has no file yet to ask for; check again "
                                     "after the first export")
    response = client.access(files[0].file_id, 0, 0)
    try:
        status = response.status_code
    finally:
        response.close()
    if status in (301, 302, 303, 307):
        return Fact(name, label, True, "redirected to the store (303): 'datalad get' "
                                       "reads only a member's bytes")
    if status in (200, 206):
        return Fact(name, label, False, "streamed through the server: for each "
                    "'datalad get' the server reads its bundle from the start up to the "
                    "member's end (offset + size), not just the member", note="streamed")
    return _unknown(name, label, f"the server answered HTTP {status}")


def _publish_fact(client: Dataverse, pid: str | None) -> Fact:
    name, label = "may_publish", "publishing"
    if not pid:
        return _unknown(name, label, "the role the collection gives a dataset's creator "
                                     "decides; known once a draft exists, and checked "
                                     "again before every --publish")
    try:
        allowed = client.user_permissions(pid)
    except DataverseError as exc:
        if exc.status in (400, 404):
            return _unknown(name, label, f"no permissions API: {exc.message}")
        raise
    if allowed.can_publish:
        return Fact(name, label, True, "this account may publish")
    return Fact(name, label, False, "this account may not publish: --publish submits the "
                                    "draft for review, the collection's curators publish")


# -- metadata, licenses, limits ------------------------------------------------------------
def _metadata_facts(client: Dataverse, collection: str | None) -> list[Fact]:
    names, types = client.field_types(collection)
    where = (f"collection {collection}" if collection else
             "the installation (give --collection for a collection's own)")
    required = [t.name for t in types if t.required]
    vocabularies = {t.name: len(t.vocabulary) for t in types if t.vocabulary}
    licenses = client.license_names()
    return [
        Fact("required_fields", "required fields", required,
             f"{', '.join(required) or 'none'} (of {where}; blocks: "
             f"{', '.join(names)})"),
        Fact("vocabularies", "controlled vocabularies", vocabularies,
             ", ".join(f"{k} ({n} terms)" for k, n in vocabularies.items()) or "none"),
        Fact("licenses", "licenses", licenses, ", ".join(licenses) or "none"),
    ]


def _count_fact(client: Dataverse, pid: str | None, collection: str | None) -> Fact:
    name, label = "file_count_limit", "file-count limit"
    limit = client.file_count_limit(pid, collection)
    if limit is None:
        return Fact(name, label, None, "none the server tells" + (
            "" if collection or pid else " (give --collection or --pid)"))
    shown = f"{limit}: a dataset holds at most {limit - 1} files, replaced ones included"
    if pid:
        shown += f"; {client.files_ever_owned(pid)} used by {pid}"
    return Fact(name, label, limit, shown)


def _embargo_fact(client: Dataverse) -> Fact:
    """The longest embargo (``access: embargoed``): the setting's value, -1 for no limit."""
    name, label = "max_embargo_months", "maximum embargo"
    try:
        months = client.max_embargo_months()
    except DataverseError as exc:
        if exc.status == 404:
            return _unknown(name, label, f"no settings API: {exc.message}")
        raise
    if months == 0:
        return Fact(name, label, 0, "embargoes are off (:MaxEmbargoDurationInMonths is 0 or "
                                    "not set): 'access: embargoed' is refused")
    if months is None:
        return Fact(name, label, -1, "no limit: an embargo may end on any later date")
    return Fact(name, label, months, f"{months} months: 'embargo_until' at most {months} "
                                     f"months from today")


# -- the cache, and acting on it -------------------------------------------------------------
def cache_path(git_dir: Path, server: str) -> Path:
    host = urlsplit(server).netloc or server
    return Path(git_dir) / "datalad-rdr" / f"server-{re.sub(r'[^A-Za-z0-9._-]', '_', host)}.json"


def save(git_dir: Path, server: str, facts: dict[str, Fact], pid: str | None,
         collection: str | None) -> Path:
    path = cache_path(git_dir, server)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "server": server, "pid": pid, "collection": collection,
        "checked": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "facts": {name: fact.value for name, fact in facts.items()},
    }, indent=1))
    return path


def cached(git_dir: Path, server: str) -> dict | None:
    """The facts last found for this server, with ``checked`` (when), or None."""
    try:
        data = json.loads(cache_path(git_dir, server).read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("server") == server else None


def adjust(git_dir: Path, server: str, cap: int) -> tuple[int, list[str]]:
    """What the export does with the facts last found for ``server``: the bundle cap is
    never above the largest file the server takes; the notes say what follows."""
    known = cached(git_dir, server)
    if known is None:
        return cap, []
    facts, notes = known["facts"], []
    largest = facts.get("largest_file")
    if isinstance(largest, int) and largest < cap:
        notes.append(f"bundles capped at {show_size(largest)}, the largest file "
                     f"{server} accepts (checked {known['checked']}), not "
                     f"{show_size(cap)}")
        cap = largest
    if facts.get("may_publish") is False:
        notes.append(f"this account may not publish on {server}: --publish submits the "
                     f"draft for review")
    if facts.get("download_redirect") is False:
        notes.append(f"{server} streams downloads: 'datalad get' of a member makes the "
                     f"server read its bundle from the start to the member's end (up to "
                     f"{show_size(cap)} per file with bundles of {show_size(cap)}); "
                     f"smaller bundles cost less")
    return cap, notes


# -- the command -------------------------------------------------------------------------
def run_check(git_dir: Path, dataset: Path, client: Dataverse, pid: str | None,
              collection: str | None) -> Iterator[dict]:
    """``--check-server``: one result per fact, then the table; the facts are kept."""
    started = time.monotonic()
    try:
        facts = discover(client, pid, collection)
    except DataverseError as exc:
        yield {"action": "rdr-check-server", "path": str(dataset), "type": "dataset",
               "status": "error", "message": f"checking {client.url} failed: {exc}"}
        return
    path = save(git_dir, client.url, facts, pid, collection)
    for fact in facts.values():
        yield {"action": "rdr-check-server", "path": str(dataset), "type": "dataset",
               "status": "ok", "message": f"{fact.label}: {fact.shown}",
               "fact": fact.name, "value": fact.value}
    width = max(len(f.label) for f in facts.values())
    table = "\n".join([f"{client.url}" + (f" ({pid})" if pid else "")]
                      + [f"  {f.label:<{width}}  {f.shown}" for f in facts.values()])
    yield {"action": "rdr-check-server", "path": str(path), "type": "file", "status": "ok",
           "message": f"server facts kept in {path} ({time.monotonic() - started:.1f} s)",
           "table": table}
