"""Pre-flight: what the RDR guide asks to check before anything is uploaded.

Run on the files of the commit being exported (git blobs, or annexed content present here), so
what is checked is what is published:

- a README at the top, not empty (``README_FILE_MISSING``, ``README_FILE_EMPTY``); the
  documentation files named in the metadata file exist and are not empty
  (``DOCUMENT_MISSING``); none of them is larger than the largest file the server accepts
  (``DOCUMENT_TOO_LARGE``, when ``--check-server`` has found it out): a document goes up as a
  file of its own, and only bundles can be split into volumes;
- for a BIDS dataset, the guide's common errors under the BIDS validator's own names: every
  JSON file parses (``JSON_INVALID``); every bold file gets a ``TaskName`` from the sidecars
  that apply to it by the inheritance principle (``SIDECAR_KEY_REQUIRED``); every ``sub-*``
  folder has a row in ``participants.tsv`` and every row a folder
  (``PARTICIPANT_ID_MISMATCH``); ``dataset_description.json`` has ``Name`` and ``BIDSVersion``
  (``JSON_KEY_REQUIRED``);
- when ``bids-validator-deno`` (PyPI) is installed, its errors on the commit (``--git-ref``),
  under its codes;
- a dataset over 50 GB is told about RDR's large-dataset procedure (a notice, not an error);
- every file name a bundle would hold (:func:`datalad_rdr.zipstream.name_problems`): a
  control character (``NAME_CONTROL_CHARACTER``), a backslash (``NAME_BACKSLASH``) or bytes
  that are not UTF-8 (``NAME_NOT_UTF8``) cannot be held right by a ZIP and cannot be
  overridden; names Windows cannot extract (``NAME_NOT_PORTABLE``: ``<>:"|?*``, device names
  such as ``CON`` or ``aux.txt``, a trailing dot or space) block unless overridden, since RDR's
  downloaders unpack on Windows too;
- symlinks in git that point to no file of the commit (``SYMLINK_UNRESOLVED``; overriding
  leaves them out), and subdatasets left out without ``-r`` (``SUBDATASET_NOT_EXPORTED``, a
  notice).

Errors block the export unless named in ``--ignore-preflight`` (or ``all``); what was
overridden is recorded in the manifest. A code that is not one of :data:`KNOWN_CODES` (nor,
when it is installed, possibly bids-validator-deno's) is refused (:func:`ignore_problem`).
Annexed content is checked against its key while the bundles are streamed
(:mod:`datalad_rdr.zipstream`), not here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import content
from .metadata.readme import pick_readme
from .plan import GB, RULES_FILE, Plan, PlannedFile
from .plan import some_paths as _some
from .sizes import human
from .zipstream import name_clashes, name_problems, shown

log = logging.getLogger("datalad.rdr.preflight")

LARGE_DATASET = 50 * GB  # RDR: datasets over 50 GB are agreed with the RDR team first
VALIDATOR = "bids-validator-deno"
VALIDATOR_TIMEOUT = 3600
JSON_READ_LIMIT = 16 * 2**20  # sidecars are small; a huge .json is not read here

#: Ours; bids-validator-deno has its own (see :func:`ignore_problem`).
KNOWN_CODES = frozenset({
    "README_FILE_MISSING", "README_FILE_EMPTY", "DOCUMENT_MISSING", "JSON_INVALID",
    "SIDECAR_KEY_REQUIRED", "PARTICIPANT_ID_MISMATCH", "JSON_KEY_REQUIRED",
    "NAME_CONTROL_CHARACTER", "NAME_BACKSLASH", "NAME_NOT_UTF8", "NAME_NOT_PORTABLE",
    "SYMLINK_UNRESOLVED", "DOCUMENT_TOO_LARGE",
    # notices: never block, so an override changes nothing
    "LARGE_DATASET", "NOT_CHECKED", "VALIDATOR_FAILED", "SUBDATASET_NOT_EXPORTED"})
#: A ZIP cannot hold these names right, so going on would publish other names.
NOT_OVERRIDABLE = frozenset({"NAME_CONTROL_CHARACTER", "NAME_BACKSLASH", "NAME_NOT_UTF8"})
#: The server would refuse the upload, so going on would fail half-way.
SERVER_REFUSES = frozenset({"DOCUMENT_TOO_LARGE"})


@dataclass
class Issue:
    code: str  # the BIDS validator's name where it has one
    message: str  # one line: cause and what to do
    paths: list[str] = field(default_factory=list)
    blocking: bool = True  # False: a notice
    source: str = "datalad-rdr"  # or "bids-validator-deno"
    sub: str | None = None  # the validator's subCode, e.g. "TaskName"

    @property
    def overridable(self) -> bool:
        return self.code not in NOT_OVERRIDABLE | SERVER_REFUSES


def find_readme(files: dict[str, PlannedFile]) -> PlannedFile | None:
    """The top-level README of the commit (:func:`.metadata.readme.pick_readme`)."""
    name = pick_readme(files)
    return files[name] if name else None


def committed_files(plan: Plan) -> dict[str, PlannedFile]:
    """The files of the commit that are published: in bundles, or CITATION.cff (which is
    never bundled, but can be listed as documentation)."""
    files = {f.path: f for b in plan.bundles for f in b.files}
    files.update((f.path, f) for f in plan.tool_files)
    return files


def ignore_problem(codes: list[str] | None, validator: bool | None = None) -> str | None:
    """Why ``--ignore-preflight codes`` cannot be taken (one line), or None.

    An unknown code is refused rather than ignored, so that a typo does not pass for an
    override. bids-validator-deno's codes are many and change with its versions: when it is
    installed (``validator``, default: found on PATH), any code written like one is taken.
    """
    if validator is None:
        validator = shutil.which(VALIDATOR) is not None
    given = [c.strip().upper() for c in codes or []]
    fixed = sorted({c for c in given if c in NOT_OVERRIDABLE})
    if fixed:
        return (f"--ignore-preflight {', '.join(fixed)}: cannot be overridden, as a ZIP "
                f"cannot hold such names right; rename the files ('git mv'), save, export "
                f"again")
    refused = sorted({c for c in given if c in SERVER_REFUSES})
    if refused:
        return (f"--ignore-preflight {', '.join(refused)}: cannot be overridden, as the "
                f"server refuses a file that large")
    unknown = [c for c in given if c != "ALL" and c not in KNOWN_CODES
               and not (validator and re.fullmatch(r"[A-Z][A-Z0-9_]*", c))]
    if unknown:
        return (f"--ignore-preflight {', '.join(unknown)}: not a pre-flight code; the codes "
                f"are {', '.join(sorted(KNOWN_CODES - NOT_OVERRIDABLE - SERVER_REFUSES))}, "
                f"'all', and, "
                f"when {VALIDATOR} is installed, its own")
    return None


def check(dataset: Path, plan: Plan, documentation: list[str] = (),
          validator: bool = True, largest: int | None = None) -> list[Issue]:
    """Every problem found in the commit of ``plan``; empty when all is well.

    ``largest``: the largest file the server accepts, when known (server discovery)."""
    files = committed_files(plan)
    reader = CommitReader()
    try:
        issues = (_names(files) + _links(plan) + _readme(files, reader, plan.commit)
                  + _documents(files, documentation, reader)
                  + _too_large_documents(files, documentation, largest))
        if plan.bids:
            issues += _bids(files, reader)
    finally:
        reader.close()
    if plan.bids and validator:
        issues += _validator(dataset, plan.commit, issues)
    total = sum(f.size for f in files.values())
    if total > LARGE_DATASET:
        issues.append(Issue(
            "LARGE_DATASET",
            f"the dataset is {total / GB:.1f} GB, over 50 GB: RDR asks large datasets to be "
            f"agreed with the RDR team before the upload (the guide: fill in RDR's "
            f"large-dataset form, or write to rdm@kuleuven.be); go on once they agreed",
            blocking=False))
    if plan.unexported_subdatasets:
        subs = plan.unexported_subdatasets
        issues.append(Issue(
            "SUBDATASET_NOT_EXPORTED",
            f"{len(subs)} subdataset(s) not exported: {_some(subs)}; their files go into "
            f"bundles only with -r (the manifest records their commit either way)",
            subs, blocking=False))
    return issues


def report(dataset: Path, issues: list[Issue], ignore: list[str] | None, checked: str
           ) -> tuple[list[dict], list[dict], bool]:
    """Result records, the overrides to record in the manifest, and whether to stop."""
    ignore_set = {c.strip().upper() for c in (ignore or [])}
    results, overrides, blocked = [], [], False
    refused = ignore_problem(ignore)
    if refused:
        blocked = True
        results.append(dict(action="rdr-preflight", path=str(dataset), type="dataset",
                            status="error", code="IGNORE_REFUSED",
                            message=f"{refused}; nothing was uploaded"))
    for issue in issues:
        # shown(): a name with a newline would break the result's line
        path = str(Path(dataset) / shown(issue.paths[0])) if issue.paths else str(dataset)
        common = dict(action="rdr-preflight", path=path, type="file" if issue.paths
                      else "dataset", code=issue.code, paths=issue.paths,
                      source=issue.source)
        if not issue.blocking:
            log.warning("%s", issue.message)
            results.append(dict(common, status="ok", message=f"{issue.code}: {issue.message}"))
        elif not issue.overridable:
            blocked = True
            results.append(dict(common, status="error", message=(
                f"{issue.code}: {issue.message} (nothing was uploaded; this cannot be "
                f"overridden)")))
        elif "ALL" in ignore_set or issue.code.upper() in ignore_set:
            overrides.append({"code": issue.code, "message": issue.message,
                              "paths": issue.paths, "source": issue.source})
            results.append(dict(common, status="ok",
                                message=f"{issue.code} overridden by --ignore-preflight: "
                                        f"{issue.message}"))
        else:
            blocked = True
            results.append(dict(common, status="error", message=(
                f"{issue.code}: {issue.message} (nothing was uploaded; "
                f"--ignore-preflight {issue.code} overrides, and is recorded)")))
    if not any(r["status"] == "error" for r in results):
        results.append(dict(action="rdr-preflight", path=str(dataset), type="dataset",
                            status="ok", message=f"pre-flight passed: {checked}"
                            + (f" ({len(overrides)} overridden)" if overrides else "")))
    return results, overrides, blocked


def summary(plan: Plan, validator: bool = True) -> str:
    """What :func:`check` looks at, for the 'passed' message."""
    parts = ["README"]
    if plan.bids:
        parts.append("BIDS essentials")
        if validator and shutil.which(VALIDATOR):
            parts.append(VALIDATOR)
    return ", ".join(parts)


# -- reading the commit's files --------------------------------------------------------

class CommitReader:
    """Bytes of files of the exported commit: git blobs, or annexed content present here."""

    def __init__(self):
        self._blobs: dict[str, content.BlobReader] = {}

    def read(self, files: list[PlannedFile], limit: int = JSON_READ_LIMIT
             ) -> dict[str, bytes | None]:
        """path -> bytes; None for annexed content not present here, or over ``limit``."""
        out: dict[str, bytes | None] = {}
        annexed: dict[str, list[PlannedFile]] = {}
        for f in files:
            if f.size > limit:
                out[f.path] = None
            elif f.key:
                annexed.setdefault(f.repo, []).append(f)
            else:
                reader = self._blobs.setdefault(f.repo, content.BlobReader(f.repo))
                out[f.path] = reader.read(f.blob)
        for repo, group in annexed.items():
            where = content.content_locations(repo, [f.key for f in group])
            for f in group:
                location = where.get(f.key)
                out[f.path] = Path(location).read_bytes() if location else None
        return out

    def close(self) -> None:
        for reader in self._blobs.values():
            reader.close()


# -- the checks ----------------------------------------------------------------------

def _names(files: dict[str, PlannedFile]) -> list[Issue]:
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(files):
        for code, detail in name_problems(path):
            found.setdefault(code, []).append((path, detail))
    for path, other in name_clashes(files):
        found.setdefault("NAME_NOT_PORTABLE", []).append(
            (path, f"the same name as {shown(other)} to Windows and macOS"))
    issues = []
    for code, what, fix in _NAME_ISSUES:
        named = found.get(code)
        if named:
            listed = _some([f"{shown(p)} ({d})" for p, d in named])
            issues.append(Issue(code, f"{len(named)} file name(s) with {what}: {listed}; "
                                      f"{fix}", [p for p, _ in named]))
    return issues


_RENAME = "rename them ('git mv'), save, export again"
_NAME_ISSUES = [
    ("NAME_CONTROL_CHARACTER", "a control character, which ZIP tools list and extract "
     "wrongly", _RENAME),
    ("NAME_BACKSLASH", "a backslash, which ZIP tools take for a folder separator",
     "rename them with '/' between folders ('git mv'), save, export again"),
    ("NAME_NOT_UTF8", "bytes that are not UTF-8, which a ZIP cannot mark as such",
     _RENAME),
    ("NAME_NOT_PORTABLE", "characters or names that Windows or macOS cannot create, so "
     "RDR's downloaders there cannot extract them as they are", _RENAME),
]


def _links(plan: Plan) -> list[Issue]:
    if not plan.links:
        return []
    listed = _some([f"{shown(p)} -> {shown(target)} ({why})"
                    for p, (target, why) in plan.links.items()])
    return [Issue("SYMLINK_UNRESOLVED",
                  f"{len(plan.links)} symlink(s) in git point to no file of the commit, so "
                  f"their bundle cannot hold them: {listed}; point them to a file of the "
                  f"dataset, or leave them out with a '-' rule in {RULES_FILE}",
                  list(plan.links))]


def _readme(files, reader: CommitReader, commit: str) -> list[Issue]:
    readme = find_readme(files)
    if readme is None:
        return [Issue("README_FILE_MISSING",
                      f"commit {commit[:8]} has no README at the top of the dataset; RDR "
                      f"requires one, shown publicly on the landing page: write README "
                      f"(what, who, how, license, code repository), save, export again")]
    data = reader.read([readme], limit=10**12)[readme.path]
    if data is not None and not data.strip():
        return [Issue("README_FILE_EMPTY",
                      f"{readme.path} is empty; RDR shows it publicly as the dataset's "
                      f"documentation: describe the dataset in it, save, export again",
                      [readme.path])]
    return []


def _documents(files, documentation, reader: CommitReader) -> list[Issue]:
    missing = [p for p in documentation if p not in files]
    empty = [p for p in documentation if p in files and files[p].size == 0]
    issues = []
    if missing:
        issues.append(Issue(
            "DOCUMENT_MISSING",
            f"documentation listed in the metadata file is not a file of the exported "
            f"commit (or is left out by a bundle rule): {_some(missing)}; fix the path "
            f"or save the file", missing))
    if empty:
        issues.append(Issue("DOCUMENT_MISSING",
                            f"documentation file(s) empty: {_some(empty)}; fill them or "
                            f"take them out of the metadata file", empty))
    return issues


def _too_large_documents(files, documentation, largest: int | None) -> list[Issue]:
    if largest is None:
        return []
    readme = find_readme(files)
    chosen = [readme] if readme else []
    chosen += [files[p] for p in documentation if p in files and files[p] not in chosen]
    over = [f for f in chosen if f.size > largest]
    if not over:
        return []
    sizes = ", ".join(f"{shown(f.path)} ({human(f.size)})" for f in over[:3])
    return [Issue("DOCUMENT_TOO_LARGE",
                  f"{sizes}: larger than the largest file the server accepts "
                  f"({human(largest)}): the README and documentation go up as files of "
                  f"their own, which cannot be split into volumes as bundles are; make "
                  f"them smaller, or take them out of 'documentation:' in the metadata "
                  f"file", [f.path for f in over])]


def _bids(files: dict[str, PlannedFile], reader: CommitReader) -> list[Issue]:
    issues: list[Issue] = []
    jsons = sorted(p for p in files if p.endswith(".json"))
    texts = reader.read([files[p] for p in jsons])
    parsed: dict[str, object] = {}
    invalid, unread = [], []
    for path in jsons:
        raw = texts.get(path)
        if raw is None:
            unread.append(path)
            continue
        try:
            parsed[path] = json.loads(raw.decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError) as exc:
            invalid.append((path, str(exc).split("\n")[0]))
    if invalid:
        first, why = invalid[0]
        issues.append(Issue(
            "JSON_INVALID",
            f"{len(invalid)} JSON file(s) do not parse: {first} ({why})"
            + (f", {_some([p for p, _ in invalid[1:]])}" if len(invalid) > 1 else "")
            + "; remove trailing commas, check them with a JSON linter",
            [p for p, _ in invalid]))

    description = parsed.get("dataset_description.json")
    if isinstance(description, dict):
        lacking = [k for k in ("Name", "BIDSVersion")
                   if not isinstance(description.get(k), str) or not description[k].strip()]
        if lacking:
            example = {"Name": '"Name": "<the dataset\'s title>"',
                       "BIDSVersion": '"BIDSVersion": "1.9.0"'}
            issues.append(Issue(
                "JSON_KEY_REQUIRED",
                f"dataset_description.json lacks {' and '.join(lacking)}; add "
                f"{', '.join(example[k] for k in lacking)}",
                ["dataset_description.json"], sub=",".join(lacking)))
    elif "dataset_description.json" in parsed:
        issues.append(Issue("JSON_KEY_REQUIRED", "dataset_description.json is not a JSON "
                            "object; write {\"Name\": ..., \"BIDSVersion\": ...}",
                            ["dataset_description.json"]))

    # a bold file under a sidecar that cannot be read or parsed: no verdict on its TaskName
    no_task = _bold_without_taskname(files, parsed, unread + [p for p, _ in invalid])
    if no_task:
        issues.append(Issue(
            "SIDECAR_KEY_REQUIRED",
            f"TaskName is not set for {len(no_task)} bold file(s) by any sidecar that "
            f"applies to them (inheritance principle): {_some(no_task)}; create a "
            f"root-level task-<label>_bold.json with {{\"TaskName\": \"<label>\"}}",
            no_task, sub="TaskName"))

    issues += _participants(files, reader)
    if unread:
        issues.append(Issue(
            "NOT_CHECKED",
            f"content of {len(unread)} JSON file(s) is not present here, so they were not "
            f"checked: {_some(unread)}; 'datalad get' them to check before publishing",
            unread, blocking=False))
    return issues


_ENTITY = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9+]+)$")


def _entities(name: str) -> tuple[dict[str, str], str] | None:
    """BIDS entities and suffix of a file name: sub-01_task-rest_bold.nii.gz -> ..., 'bold'."""
    stem = name.split(".", 1)[0]
    parts = stem.split("_")
    entities = {}
    for part in parts[:-1]:
        m = _ENTITY.match(part)
        if not m:
            return None
        entities[m.group(1)] = m.group(2)
    if _ENTITY.match(parts[-1]):
        return None
    return entities, parts[-1]


def _bold_without_taskname(files, parsed: dict, unknown: list[str]) -> list[str]:
    by_folder: dict[PurePosixPath, list[tuple[dict, str]]] = {}  # bold sidecars
    for path in files:
        if not path.endswith(".json") or path.startswith(("derivatives/", "sourcedata/")):
            continue
        parsed_name = _entities(PurePosixPath(path).name)
        if parsed_name and parsed_name[1] == "bold":
            by_folder.setdefault(PurePosixPath(path).parent, []).append(
                (parsed_name[0], path))
    missing = []
    for path in sorted(files):
        if not re.match(r"^sub-[^/]+/.*_bold\.nii(\.gz)?$", path):
            continue
        data = PurePosixPath(path)
        parsed_name = _entities(data.name)
        if parsed_name is None:
            continue
        entities = parsed_name[0]
        # the sidecars in its folder and the folders above, whose entities are its own
        applicable = [
            (len(folder.parts), len(ents), key) for folder in data.parents
            for ents, key in by_folder.get(folder, ())
            if all(entities.get(k) == v for k, v in ents.items())]
        if any(key in unknown for _, _, key in applicable):
            continue  # cannot tell; reported as JSON_INVALID or NOT_CHECKED
        merged: dict = {}
        for _, _, key in sorted(applicable):
            value = parsed.get(key)
            if isinstance(value, dict):
                merged.update(value)
        if not merged.get("TaskName"):
            missing.append(path)
    return missing


def _participants(files, reader: CommitReader) -> list[Issue]:
    subjects = sorted({p.split("/", 1)[0] for p in files
                       if "/" in p and re.match(r"^sub-[A-Za-z0-9]+$", p.split("/", 1)[0])})
    table = files.get("participants.tsv")
    if table is None:
        return []  # RECOMMENDED in BIDS, not required
    raw = reader.read([table])[table.path]
    if raw is None:
        return [Issue("NOT_CHECKED", "content of participants.tsv is not present here, so "
                      "PARTICIPANT_ID_MISMATCH was not checked; 'datalad get' it",
                      ["participants.tsv"], blocking=False)]
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig", "replace")), delimiter="\t"))
    if not rows or "participant_id" not in [c.strip() for c in rows[0]]:
        return [Issue("PARTICIPANT_ID_MISMATCH", "participants.tsv has no participant_id "
                      "column; make it the first column, one row per sub-* folder",
                      ["participants.tsv"])]
    column = [c.strip() for c in rows[0]].index("participant_id")
    listed = {r[column].strip() for r in rows[1:] if len(r) > column and r[column].strip()}
    no_row = [s for s in subjects if s not in listed]
    no_folder = sorted(listed - set(subjects))
    if not no_row and not no_folder:
        return []
    parts = []
    if no_row:
        parts.append(f"folders without a participants.tsv row: {_some(no_row)}")
    if no_folder:
        parts.append(f"participants.tsv rows without a folder: {_some(no_folder)}")
    return [Issue("PARTICIPANT_ID_MISMATCH",
                  "; ".join(parts) + "; make every sub-XX/ folder match one row",
                  ["participants.tsv"] + no_row)]


# -- the BIDS validator, when installed -----------------------------------------------

def _validator(dataset: Path, commit: str, ours: list[Issue]) -> list[Issue]:
    exe = shutil.which(VALIDATOR)
    if exe is None:
        return []
    cmd = [exe, "--format", "json", "--ignoreWarnings", "--no-color", "--git-ref", commit,
           str(dataset)]
    proc = None
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=VALIDATOR_TIMEOUT)
        output = json.loads(proc.stdout)
        found = output["issues"]["issues"]
        explain = output["issues"].get("codeMessages", {})
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError) as exc:
        stderr = (proc.stderr if proc is not None else "") or ""
        why = (stderr.strip().splitlines() or [type(exc).__name__])[-1]
        return [Issue("VALIDATOR_FAILED", f"{VALIDATOR} did not give a result ({why}); "
                      f"run it by hand: {VALIDATOR} {dataset}", blocking=False,
                      source=VALIDATOR)]
    covered = {(i.code, p) for i in ours for p in i.paths}
    groups: dict[tuple[str, str | None], list[str]] = {}
    for item in found:
        if item.get("severity") != "error":
            continue
        code, location = item.get("code", "ERROR"), (item.get("location") or "").lstrip("/")
        if (code, location) in covered:
            continue
        groups.setdefault((code, item.get("subCode")), []).append(location)
    issues = []
    for (code, sub), locations in sorted(groups.items(), key=lambda kv: kv[0][0]):
        what = (explain.get(code) or code).strip().splitlines()[0]
        where = sorted({loc for loc in locations if loc})
        key = f" ({sub})" if sub else ""
        issues.append(Issue(
            code, f"{VALIDATOR}: {what}{key}"
                  + (f" in {len(where)} file(s): {_some(where)}" if where else "")
                  + f"; see https://neurostars.org/search?q={code}",
            where, source=VALIDATOR, sub=sub))
    return issues
