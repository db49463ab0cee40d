"""Publish: release the draft, read the DOI, keep it in the dataset (the guide's steps 7-8).

On ``datalad rdr-export --publish major|minor``, after an export whose verification found
nothing wrong: the draft is published (``actions/:publish``), the ``finalizePublication`` lock
is waited for (Dataverse publishes asynchronously and re-hashes every new file; a checksum
mismatch leaves a ``FileValidationFailed`` lock, reported as an error), the released version
and its DOI are read back from the server, and written

- into the manifest (``doi``, ``version``, ``published``), and
- into ``CITATION.cff`` at the top of the dataset (title, authors with affiliation and ORCID,
  DOI, version, release date, license, keywords, code repository; a ``CITATION.cff`` that is
  there already keeps its other fields),

both saved with ``datalad save``, so the DOI is in the dataset's history. Without ``--publish``
the draft is left for review in the web UI.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Iterator

import yaml

from . import manifest as mf
from .dataverse import Dataverse, DataverseError

log = logging.getLogger("datalad.rdr.publish")

CITATION = "CITATION.cff"
SPDX = {"CC-BY-4.0": "CC-BY-4.0", "CC0-1.0": "CC0-1.0", "CC0": "CC0-1.0",
        "CC BY 4.0": "CC-BY-4.0", "CC0 1.0": "CC0-1.0"}


class PublishError(Exception):
    pass


def release(client: Dataverse, pid: str, kind: str, timeout: float = 600) -> dict:
    """Publish the draft and wait until it is released; returns the released version."""
    def failed(locks):
        bad = [lock for lock in locks if lock.get("lockType") == "FileValidationFailed"]
        if bad:
            raise PublishError(
                f"the server could not validate the files while publishing "
                f"({bad[0].get('message') or 'FileValidationFailed'}); the draft stays "
                f"unpublished: ask the RDR team to remove the lock, delete the file(s) "
                f"named from the draft, and rerun 'datalad rdr-export', which sends them "
                f"again")

    before = _published(client, pid)
    client.wait_unlocked(pid, timeout=timeout, on_wait=failed)  # e.g. Ingest
    client.publish(pid, kind)
    started = time.monotonic()
    client.wait_unlocked(pid, timeout=timeout, on_wait=failed)  # finalizePublication
    after = _published(client, pid)
    if after is None or (before is not None and _number(after) <= _number(before)):
        raise PublishError(f"the server finished publishing {pid} but lists no new "
                           f"version; check the dataset in the web UI")
    log.info("published %s as %s after %.1f s", pid, _version(after),
             time.monotonic() - started)
    return after


def run(dataset: Path, client: Dataverse, pid: str, kind: str, manifest: mf.Manifest,
        meta=None, timeout: float = 600) -> Iterator[dict]:
    """Publish, then record the DOI in the manifest and CITATION.cff, saved."""
    dataset = Path(dataset)
    try:
        version = release(client, pid, kind, timeout)
    except DataverseError as exc:
        yield _result(dataset, "error", _explain(exc, pid, kind))
        return
    except PublishError as exc:
        yield _result(dataset, "error", str(exc))
        return
    persistent = version.get("datasetPersistentId") or pid
    if not persistent.startswith("doi:"):
        yield _result(dataset, "error", f"published {pid}, but its identifier "
                                        f"{persistent} is not a DOI; nothing recorded")
        return
    doi = persistent[len("doi:"):]
    number = _version(version)
    released = version.get("releaseTime") or time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                           time.gmtime())
    manifest.doi, manifest.version, manifest.published = doi, number, released
    path = mf.save(dataset, manifest)
    cff = write_citation(dataset, doi, number, released[:10], meta)
    _save(dataset, [path, cff], f"[DATALAD RDR] published {pid} as version {number} "
                                f"(DOI {doi})")
    yield _result(dataset, "ok", f"published {pid} as version {number}: DOI {doi} "
                                 f"(https://doi.org/{doi}), recorded in {mf.MANIFEST} and "
                                 f"{CITATION}", doi=doi, version=number, pid=pid)


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


def _published(client: Dataverse, pid: str) -> dict | None:
    try:
        return client.dataset_version(pid, ":latest-published")
    except DataverseError as exc:
        if exc.status == 404:
            return None
        raise


def _number(version: dict) -> tuple[int, int]:
    return int(version.get("versionNumber") or 0), int(version.get("versionMinorNumber") or 0)


def _version(version: dict) -> str:
    return "{}.{}".format(*_number(version))


def _explain(exc: DataverseError, pid: str, kind: str) -> str:
    text = exc.message.lower()
    if "minor" in text and kind == "minor":
        return (f"{pid} was never published; the first publication must be major: use "
                f"--publish major ({exc.message})")
    if "license" in text or "terms of use" in text:
        return (f"{pid} has no license, which publishing needs: set 'license' in "
                f".datalad/rdr/metadata.yaml and export again (or choose one in the web "
                f"UI's Terms tab) ({exc.message})")
    if "without a draft" in text:
        return (f"nothing to publish: {pid} has no draft (nothing changed since the last "
                f"published version)")
    if "locked" in text:
        return f"{pid} is locked on the server, so it cannot be published now: {exc.message}"
    return f"publishing {pid} failed: {exc}"


def _save(dataset: Path, paths: list[Path], message: str) -> None:
    from datalad.api import save

    save(dataset=str(dataset), path=[str(p) for p in paths], message=message,
         result_renderer="disabled", return_type="list", on_failure="stop")


def _result(dataset: Path, status: str, message: str, **extra) -> dict:
    return {"action": "rdr-publish", "path": str(dataset), "type": "dataset",
            "status": status, "message": message, **extra}
