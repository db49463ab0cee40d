"""Publish: release the draft, read the DOI, keep it in the dataset (the guide's steps 7-8).

On ``datalad rdr-export --publish major|minor``, after an export whose verification found
nothing wrong: the draft is published (``actions/:publish``), the ``finalizePublication`` lock
is waited for (Dataverse publishes asynchronously; at a major release it re-hashes every file
of the dataset, so the wait is sized by its bytes; a checksum mismatch leaves a
``FileValidationFailed`` lock, reported as an error), the released version
and its DOI are read back from the server, and written

- into the manifest (``doi``, ``version``, ``published``), and
- into ``CITATION.cff`` at the top of the dataset (title, authors with affiliation and ORCID,
  DOI, version, release date, license, keywords, code repository; a ``CITATION.cff`` that is
  there already keeps its other fields),

both committed together (as ``datalad save`` would), so the DOI is in the dataset's history.
Without ``--publish`` the draft is left for review in the web UI.

What the server would refuse is refused before asking it: a minor release after files were
added, replaced or removed (Dataverse then allows only a major one). Where this account may
not publish (a curated collection), the draft is submitted for review instead.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import yaml
from datalad.log import log_progress

from . import gitannex, manifest as mf
from .dataverse import DatasetVersion, Dataverse, DataverseError, NotFound

log = logging.getLogger("datalad.rdr.publish")

CITATION = "CITATION.cff"
SPDX = {"CC-BY-4.0": "CC-BY-4.0", "CC0-1.0": "CC0-1.0", "CC0": "CC0-1.0",
        "CC BY 4.0": "CC-BY-4.0", "CC0 1.0": "CC0-1.0"}


class PublishError(Exception):
    pass


#: Bytes per second the server re-hashes at a major release (it reads every file of the
#: dataset from the store; FinalizeDatasetPublicationCommand, fidelity row 25). Low on
#: purpose: the wait is sized by it, and waiting too long costs nothing.
VALIDATION_RATE = 20e6
#: The shortest wait for the finalizePublication lock, whatever the size.
WAIT_FLOOR = 600


def publication_wait(nbytes: int, kind: str, floor: float = WAIT_FLOOR) -> float:
    """Seconds to wait for a publication: only major releases re-hash the dataset."""
    if kind != "major":
        return floor
    return max(floor, 2 * nbytes / VALIDATION_RATE)


def refusal(client: Dataverse, pid: str, kind: str) -> str | None:
    """Why the server would refuse this release, found out before asking it; None if not.

    Dataverse allows a minor release only when the draft has exactly the files of the last
    release (DatasetVersion.isMinorUpdate; PublishDatasetCommand, fidelity row 24)."""
    if kind != "minor":
        return None
    last = client.last_release(pid)
    if last is None:
        return (f"{pid} was never published; the first publication must be major: use "
                f"--publish major")
    try:
        draft = client.files(pid, ":draft")
    except NotFound:
        return None  # nothing to publish: the server's own answer says so
    released = client.files(pid, last.name)
    before = {e.file_id: e.path for e in released}
    now = {e.file_id: e.path for e in draft}
    changes = []
    added = [now[i] for i in now if i not in before]
    removed = [before[i] for i in before if i not in now]
    replaced = sorted(set(added) & set(removed))
    added = sorted(set(added) - set(replaced))
    removed = sorted(set(removed) - set(replaced))
    for verb, names in (("added", added), ("replaced", replaced), ("removed", removed)):
        if names:
            changes.append(f"{verb}: {', '.join(names[:5])}"
                           + (f" and {len(names) - 5} more" if len(names) > 5 else ""))
    if not changes:
        return None
    return (f"not published: files were added, replaced or removed since version "
            f"{last.name} ({'; '.join(changes)}), and Dataverse allows only a major "
            f"release then: use --publish major")


def release(client: Dataverse, pid: str, kind: str, timeout: float = WAIT_FLOOR,
            nbytes: int = 0) -> DatasetVersion:
    """Publish the draft and wait until it is released; returns the released version.

    The wait for the ``finalizePublication`` lock is sized by the dataset's ``nbytes``
    (:func:`publication_wait`, ``timeout`` its floor), with a progress bar."""
    def failed(locks):
        bad = [lock for lock in locks if lock.kind == "FileValidationFailed"]
        if bad:
            raise PublishError(
                f"the server could not validate the files while publishing "
                f"({bad[0].reason or 'FileValidationFailed'}): the stored bytes of "
                f"a file do not match its checksum. The draft stays unpublished and "
                f"locked. Ask RDR support to remove the FileValidationFailed lock of {pid} "
                f"(only a superuser can) and to tell which file failed (the server's log "
                f"names it); delete that file from the draft and rerun "
                f"'datalad rdr-export', which sends it again")

    before = client.last_release(pid)
    client.wait_unlocked(pid, timeout=timeout, on_wait=failed)  # e.g. Ingest
    client.publish(pid, kind)
    started = time.monotonic()
    wait = publication_wait(nbytes, kind, timeout)
    progress_id = f"rdr-publish-{pid}"
    log_progress(log.info, progress_id,
                 f"Waiting for {pid} to be published"
                 + (f" (the server re-hashes {nbytes / 1e9:.1f} GB)" if kind == "major"
                    and nbytes else ""),
                 total=int(wait), unit=" s", label="Publishing")
    shown = [0]

    def waiting(locks):
        failed(locks)
        elapsed = int(time.monotonic() - started)
        if elapsed > shown[0]:
            log_progress(log.info, progress_id, "", update=elapsed - shown[0],
                         increment=True)
            shown[0] = elapsed

    try:
        client.wait_unlocked(pid, timeout=wait, poll=2 if wait > 60 else 0.5,
                             on_wait=waiting)  # finalizePublication
    finally:
        log_progress(log.info, progress_id, f"Finished waiting for {pid}")
    after = client.last_release(pid)
    if after is None or (before is not None and after.number <= before.number):
        raise PublishError(f"the server finished publishing {pid} but lists no new "
                           f"version; check the dataset in the web UI")
    log.info("published %s as %s after %.1f s", pid, after.name,
             time.monotonic() - started)
    return after


def run(dataset: Path, client: Dataverse, pid: str, kind: str, manifest: mf.Manifest,
        meta=None, timeout: float = WAIT_FLOOR) -> Iterator[dict]:
    """Publish, then record the DOI in the manifest and CITATION.cff, saved.

    Where this token may not publish (the collection is curated), the draft is submitted
    for review instead, and the result says so."""
    dataset = Path(dataset)
    try:
        if not may_publish(client, pid):
            yield from submit(dataset, client, pid)
            return
        problem = refusal(client, pid, kind)
        if problem:
            yield _result(dataset, "error", problem)
            return
        nbytes = sum(b.size for b in manifest.bundles) + sum(
            d.size for d in manifest.documents)
        version = release(client, pid, kind, timeout, nbytes)
    except DataverseError as exc:
        yield _result(dataset, "error", _explain(exc, pid, kind))
        return
    except PublishError as exc:
        yield _result(dataset, "error", str(exc))
        return
    persistent = version.persistent_id or pid
    if not persistent.startswith("doi:"):
        yield _result(dataset, "error", f"published {pid}, but its identifier "
                                        f"{persistent} is not a DOI; nothing recorded")
        return
    doi = persistent[len("doi:"):]
    number = version.name
    released = version.release_time or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest.doi, manifest.version, manifest.published = doi, number, released
    path = mf.save(dataset, manifest)
    cff = write_citation(dataset, doi, number, released[:10], meta)
    try:
        gitannex.save_paths(dataset, [path, cff], f"[DATALAD RDR] published {pid} as "
                            f"version {number} (DOI {doi})", restore=False)
    except gitannex.GitError as exc:  # a hook's refusal, say: the files keep the DOI
        yield _result(dataset, "error", f"published {pid} as version {number} (DOI {doi}), "
                                        f"but its record could not be committed ({exc}): "
                                        f"commit {mf.MANIFEST} and {CITATION} with 'datalad "
                                        f"save'", doi=doi, version=number, pid=pid)
        return
    yield _result(dataset, "ok", f"published {pid} as version {number}: DOI {doi} "
                                 f"(https://doi.org/{doi}), recorded in {mf.MANIFEST} and "
                                 f"{CITATION}", doi=doi, version=number, pid=pid)


def may_publish(client: Dataverse, pid: str) -> bool:
    """Whether this token may publish the dataset (a server without the permissions API
    is taken at its word when it answers the publish)."""
    try:
        return client.user_permissions(pid).can_publish is not False
    except DataverseError as exc:
        if exc.status in (400, 404):
            return True
        raise


def submit(dataset: Path, client: Dataverse, pid: str) -> Iterator[dict]:
    """Submit the draft for review: the collection's curators publish it."""
    try:
        client.submit_for_review(pid)
    except DataverseError as exc:
        yield _result(dataset, "error", f"this account may not publish {pid}, and "
                                        f"submitting it for review failed: {exc}")
        return
    yield _result(dataset, "ok", f"this account may not publish in this collection: "
                                 f"{pid} was submitted for review instead; its curators "
                                 f"publish it (the draft cannot be edited meanwhile), and "
                                 f"the DOI is on its landing page once they have",
                  pid=pid, submitted_for_review=True)


def citation(dataset: Path, doi: str, version: str, date: str, meta=None,
             existing: dict | None = None) -> dict:
    """The CITATION.cff content: an existing file's fields kept, the release's updated."""
    cff = dict(existing or {})
    cff.setdefault("cff-version", "1.2.0")
    cff.setdefault("message", "If you use this dataset, please cite it as below.")
    cff["type"] = "dataset"
    title, authors = _title_and_authors(dataset, meta)
    if meta is not None or "title" not in cff:
        cff["title"] = title
    if meta is not None or "authors" not in cff:
        cff["authors"] = authors
    cff["doi"] = doi
    cff["version"] = version
    cff["date-released"] = date
    cff["url"] = f"https://doi.org/{doi}"
    others = [i for i in cff.get("identifiers") or []
              if not (isinstance(i, dict) and i.get("type") == "doi" and i.get("value") == doi)]
    cff["identifiers"] = [{"type": "doi", "value": doi,
                           "description": f"The dataset on RDR, version {version}"}] + others
    if meta is not None:
        if SPDX.get(meta.license):
            cff["license"] = SPDX[meta.license]
        if meta.keywords:
            cff["keywords"] = list(meta.keywords)
        if meta.description:
            cff["abstract"] = meta.description
        if meta.code_repository:
            cff["repository-code"] = meta.code_repository
    return cff


def write_citation(dataset: Path, doi: str, version: str, date: str, meta=None) -> Path:
    path = Path(dataset) / CITATION
    existing = None
    if path.exists():
        try:
            existing = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            existing = None
        if path.is_symlink():  # annexed and locked: replace the link by the new file
            path.unlink()
    cff = citation(dataset, doi, version, date, meta,
                   existing if isinstance(existing, dict) else None)
    text = ("# Written by datalad-rdr on publication; the DOI, version and date are the\n"
            "# server's. Other fields you add here are kept.\n"
            + yaml.safe_dump(cff, sort_keys=False, allow_unicode=True, width=88))
    path.write_text(text, encoding="utf-8")
    return path


def cff_person(name: str, affiliation: str | None = None, orcid: str | None = None,
               email: str | None = None) -> dict:
    """A CFF person from Dataverse's "Family, Given" (or "Given Family") name."""
    if "," in name:
        family, given = (part.strip() for part in name.split(",", 1))
    elif " " in name.strip():
        given, family = name.strip().rsplit(" ", 1)
    else:
        given, family = "", name.strip()
    person = {"family-names": family}
    if given:
        person["given-names"] = given
    if affiliation:
        person["affiliation"] = affiliation
    if orcid:
        person["orcid"] = orcid if orcid.startswith("http") else \
            f"https://orcid.org/{orcid.strip()}"
    if email:
        person["email"] = email
    return person


def _title_and_authors(dataset: Path, meta) -> tuple[str, list[dict]]:
    if meta is not None:
        return meta.title, [cff_person(a.name, a.affiliation, a.orcid) for a in meta.authors]
    try:
        description = json.loads((dataset / "dataset_description.json").read_text())
    except (OSError, ValueError):
        description = {}
    names = [a for a in description.get("Authors") or [] if isinstance(a, str)]
    return (description.get("Name") or dataset.name,
            [cff_person(n) for n in names] or [{"name": "Unknown"}])


def _explain(exc: DataverseError, pid: str, kind: str) -> str:
    text = exc.message.lower()
    if "cannot publish as minor" in text:
        return (f"{pid} was never published; the first publication must be major: use "
                f"--publish major ({exc.message})")
    if "cannot release as minor" in text:
        return (f"files changed since the last release of {pid}, so Dataverse allows only "
                f"a major release: use --publish major ({exc.message})")
    if "license" in text or "terms of use" in text:
        return (f"{pid} has no license, which publishing needs: set 'license' in "
                f".datalad/rdr/metadata.yaml and export again (or choose one in the web "
                f"UI's Terms tab) ({exc.message})")
    if "only draft versions can be released" in text or "without a draft" in text:
        return (f"nothing to publish: {pid} has no draft (nothing changed since the last "
                f"published version)")
    if "missing or corrupted" in text:
        return (f"{pid} cannot be published: the server found files missing or corrupted "
                f"when it last validated them and keeps a FileValidationFailed lock. Ask "
                f"RDR support to remove that lock (only a superuser can), delete the "
                f"file(s) they name from the draft, and rerun 'datalad rdr-export' "
                f"({exc.message})")
    if "locked" in text:
        return f"{pid} is locked on the server, so it cannot be published now: {exc.message}"
    return f"publishing {pid} failed: {exc}"


def _result(dataset: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-publish", "path": str(dataset), "type": "dataset",
            "status": status, "message": message, **extra}
