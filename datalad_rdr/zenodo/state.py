"""What a sync remembers in the dataset, and what it tells git-annex.

``.datalad/rdr/zenodo.json`` holds, per config file, the endpoint, the concept and version
ids, DOIs, and what each file was (MD5, size, annex key, a ZIP's fingerprint): the next run
compares with it instead of reading content. It is saved with ``datalad save`` together with
StepUp's record id file. After a publish, the Zenodo URL of each annexed file sent as itself
is registered with ``git annex registerurl``, so that clones can ``datalad get`` it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..gitannex import Annex, AnnexError

RECORD_FILE = ".datalad/rdr/zenodo.json"
MANIFEST_FILE = ".datalad/rdr/manifest.json"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def data_doi(ds) -> str | None:
    """The DOI of the dataset's data on RDR, when ``rdr-export`` recorded one."""
    doi = read_json(Path(ds.path) / MANIFEST_FILE).get("doi")
    return doi if isinstance(doi, str) and doi else None


def load(ds, name: str, endpoint: str) -> dict:
    """The last run's state of config ``name``; empty if it was for another server (a
    record id means something on its own server only)."""
    state = read_json(Path(ds.path) / RECORD_FILE).get(name) or {}
    return state if state.get("endpoint") in (None, endpoint) else {}


def save(ds, name: str, state: dict, also: list[Path], message: str) -> list[dict]:
    """Write ``state`` for config ``name`` and ``datalad save`` it with the files ``also``
    (those inside the dataset); the failed save results."""
    path = Path(ds.path) / RECORD_FILE
    everything = read_json(path)
    everything[name] = state
    text = json.dumps(everything, indent=1, sort_keys=True) + "\n"
    changed = []
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        changed.append(path)
    changed += [p for p in also if Path(ds.path) in p.parents]
    results = ds.save(path=[str(p) for p in changed], to_git=True, message=message,
                      result_renderer="disabled", on_failure="ignore", return_type="list")
    return [r for r in results if r.get("status") in ("error", "impossible")]


def register_urls(repo: Path, pairs: list[tuple[str, str]]) -> str | None:
    """Tell git-annex in ``repo`` that each (key, URL) can be downloaded (web remote);
    git-annex's complaint if it refused."""
    try:
        Annex(repo).register_urls(pairs)
    except AnnexError as exc:
        return str(exc)[:300]
    return None
