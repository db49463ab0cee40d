"""Verify: the server's own listing against the manifest (the RDR guide's step 7).

After an export (and on ``datalad rdr-export --verify-only``), the dataset's files are listed by
the server (the draft, or the latest published version when there is no draft) and compared
with what the manifest says was sent:

- every bundle and document of the manifest is there, under its name and folder (a bundle
  in split volumes: every volume, under its own name);
- its size and MD5 are the manifest's (each volume's own);
- documents (README, documentation) are public; bundles are restricted, or public when the
  dataset is declared open;
- bundles are under the embargo the metadata file names, until its date (documents never
  are); each bundle's embargo and date are reported;
- nothing else is there (no stray files) but the bundles the dataset's ``rdr`` special remote
  stored in the same record (``git annex copy --to rdr``): those the git-annex branch's location
  records name, by file id, are listed as ``remote`` and are fine, and so is the deposited
  git history (:mod:`.history`), listed as ``history``.

Each file gives one result (``error`` on any mismatch, with what to do) and the whole a table,
rendered by the command after its results.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .dataverse import Dataverse, FileEntry
from .history import NAME as HISTORY
from .manifest import Manifest
from .remote import locations
from .gitannex import Annex


@dataclass
class Row:
    name: str  # the file's path on the server: folder/label
    kind: str  # "bundle", "document", "remote" (the rdr remote's own) or "stray"
    size: int | None = None  # the manifest's
    server_size: int | None = None
    md5: str | None = None
    server_md5: str | None = None
    access: str | None = None  # expected: "restricted" or "public"
    server_access: str | None = None
    file_id: int | None = None  # on the server
    embargo: str | None = None  # expected: the end of the embargo (YYYY-MM-DD), or None
    server_embargo: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def held_by_remote(dataset: Path, server: str, pid: str) -> set[int]:
    """File ids of this dataset on this server that the git-annex branch's location records
    name: the bundles of the ``rdr`` remote (and of earlier exports)."""
    return {locations.parse(uri).file_id
            for uris in Annex(Path(dataset) / ".git").all_urls().values() for uri in uris
            if locations.claims(uri, server, pid)}


def compare(entries: list[FileEntry], manifest: Manifest, bundles_restricted: bool,
            remote_ids=lambda: set(), embargo_until: dt.date | None = None) -> list[Row]:
    """``remote_ids``: called when the server has files the manifest does not name, for the
    file ids the ``rdr`` remote holds. ``embargo_until``: the bundles' embargo (None: none)."""
    on_server = {e.path: e for e in entries}
    access = "restricted" if bundles_restricted else "public"
    expected = [(v.label, "bundle", v.size, v.md5, access) if b.volumes else
                (b.filename, "bundle", b.size, b.md5, access)
                for b in manifest.bundles for v in (b.volumes or [None])]
    expected += [(f"{d.directory}/{d.label}" if d.directory else d.label, "document", d.size,
                  d.md5, "public") for d in manifest.documents]
    rows = []
    for name, kind, size, md5, access in expected:
        row = Row(name, kind, size, md5=md5, access=access)
        entry = on_server.pop(name, None)
        if entry is None:
            row.problems.append("not on the server: rerun 'datalad rdr-export' to send it "
                                "again")
            rows.append(row)
            continue
        _fill(row, entry)
        if row.server_size != size:
            row.problems.append(f"the server holds {row.server_size} bytes, the manifest "
                                f"{size}: rerun 'datalad rdr-export' to send it again")
        elif row.server_md5 != md5:
            row.problems.append(f"MD5 {row.server_md5} on the server, {md5} in the manifest: "
                                f"rerun 'datalad rdr-export' to send it again")
        _check_embargo(row, embargo_until.isoformat() if embargo_until and
                       kind == "bundle" else None)
        if row.server_access != access:
            row.problems.append(
                f"{row.server_access} on the server, should be {access}: rerun "
                f"'datalad rdr-export' (or in the web UI: Edit Files > "
                f"{'Restrict' if access == 'restricted' else 'Unrestrict'})")
        rows.append(row)
    history = on_server.pop(HISTORY, None)  # the export's own, not in the manifest it holds
    if history is not None:
        rows.append(Row(HISTORY, "history"))
        _fill(rows[-1], history)
    held = remote_ids() if on_server else set()  # costly: only for files left unexplained
    for name, entry in sorted(on_server.items()):
        row = Row(name, "stray")
        _fill(row, entry)
        if row.file_id in held:
            row.kind = "remote"  # stored by 'git annex copy --to rdr': the remote reads it
            rows.append(row)
            continue
        row.problems.append("on the server but not sent by datalad-rdr (not in the "
                            "manifest): delete it from the draft, or list it as "
                            "documentation in the metadata file")
        rows.append(row)
    return rows


def results(dataset: Path, rows: list[Row], where: str, pid: str) -> list[dict]:
    """One result per file, then the summary carrying the rendered table."""
    out = []
    for row in rows:
        if row.kind == "remote":
            message = (f"{row.name}: a bundle of the dataset's rdr special remote "
                       f"({row.server_size} bytes, {row.server_access})")
        elif row.kind == "history":
            message = (f"{row.name}: the dataset's git history ({row.server_size} bytes, "
                       f"{row.server_access})")
        elif row.ok:
            message = (f"{row.name}: {row.server_size} bytes and MD5 as in the manifest, "
                       f"{row.server_access}" + _embargo_note(row.server_embargo))
        else:
            message = f"{row.name}: " + "; ".join(row.problems)
        out.append(dict(action="rdr-verify", path=str(Path(dataset) / row.name), type="file",
                        status="ok" if row.ok else "error", message=message,
                        verify=asdict(row)))
    bad = [r for r in rows if not r.ok]
    summary = (f"verify: all {len(rows)} files of the {where} version of {pid} match the "
               f"manifest" if not bad else
               f"verify: {len(bad)} of {len(rows)} files of the {where} version of {pid} do "
               f"not match the manifest: {', '.join(r.name for r in bad)}")
    out.append(dict(action="rdr-verify", path=str(dataset), type="dataset",
                    status="error" if bad else "ok", message=summary, pid=pid,
                    table=render(rows)))
    return out


def render(rows: list[Row]) -> str:
    """A plain-text table: file, kind, bytes, MD5, access, check."""
    def pair(expected, found, short=False):
        if expected is None:
            return "-" if found is None else _short(found, short)
        if found is None:
            return f"{_short(expected, short)} / missing"
        if expected == found:
            return _short(found, short)
        return f"{_short(expected, short)} != {_short(found, short)}"

    embargoes = any(r.embargo or r.server_embargo for r in rows)  # a column only then
    header = ("file", "kind", "bytes", "md5", "access", *(("embargo",) if embargoes else ()),
              "check")
    lines = [header]
    for r in rows:
        lines.append((r.name, r.kind, pair(r.size, r.server_size),
                      pair(r.md5, r.server_md5, short=True),
                      pair(r.access, r.server_access),
                      *((pair(r.embargo, r.server_embargo),) if embargoes else ()),
                      "ok" if r.ok else "MISMATCH"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    if any(not r.ok for r in rows):
        text.append("(a != b: the manifest's a, the server's b)")
    return "\n".join(text)


def _ended(date: str | None) -> bool:
    return date is not None and date <= dt.date.today().isoformat()


def _embargo_note(date: str | None) -> str:
    if date is None:
        return ""
    return f", embargo ended {date}" if _ended(date) else f", under embargo until {date}"


def _short(value, short: bool) -> str:
    return str(value)[:8] if short and value is not None else str(value)


def _fill(row: Row, entry: FileEntry) -> None:
    row.server_size = entry.size
    row.server_md5 = entry.md5
    row.server_access = "restricted" if entry.restricted else "public"
    row.file_id = entry.file_id
    row.server_embargo = entry.embargo.date_available.isoformat() if entry.embargo else None


def _check_embargo(row: Row, until: str | None) -> None:
    row.embargo = until
    if row.server_embargo == until or (until is None and _ended(row.server_embargo)):
        return  # an embargo that has ended stays listed: the file is open as wanted
    found = f"embargo until {row.server_embargo}" if row.server_embargo else "no embargo"
    if row.kind == "document":  # the export embargoes bundles only
        row.problems.append(f"{found} on the server, but documents stay public: lift it in "
                            f"the web UI (Edit Files > Embargo), or ask RDR support")
        return
    wanted = f"until {until}" if until else "none"
    row.problems.append(f"{found} on the server, {wanted} in the metadata file: rerun "
                        f"'datalad rdr-export' to {'lift' if until is None else 'set'} it")


def run(dataset: Path, client: Dataverse, manifest: Manifest,
        bundles_restricted: bool, embargo_until: dt.date | None = None) -> list[dict]:
    where, entries = client.latest_files(manifest.pid)
    rows = compare(entries, manifest, bundles_restricted,
                   lambda: held_by_remote(dataset, manifest.server, manifest.pid),
                   embargo_until)
    return results(dataset, rows, where, manifest.pid)
