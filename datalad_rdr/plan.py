"""Plan stage: which file of the dataset goes into which ZIP bundle.

The policy is plain data a user can read and override. Rules are ``glob -> bundle`` pairs,
first match wins; a dataset may put its own in ``.datalad/rdr/bundles`` (versioned), one rule a
line, ``#`` comments, bundle ``-`` to leave files out::

    # glob                      bundle
    derivatives/fmriprep/**     fmriprep
    stimuli/**                  core
    sourcedata/**               -

Globs: ``*`` and ``?`` stay within one path component, ``**`` crosses them. Rules of the
dataset come first, then the defaults:

- a BIDS dataset (``dataset_description.json`` at the top), as the RDR guide bundles it:
  ``sub-*/`` -> ``raw``; each pipeline under ``derivatives/`` with at least
  ``large_derivative`` bytes -> a bundle named after it; other derivatives -> ``derivatives``;
  everything else (top-level files, sidecars, ``stimuli/``, atlases) -> ``core``;
- any other dataset: one bundle per top-level folder, top-level files -> ``core``.

DataLad's and git's own files (``.datalad/``, ``.git*``) are never bundled.

Every bundle's ZIP stays under the cap: a bundle over it is split into numbered parts
(``raw-01``, ``raw-02``) at subject boundaries (``sub-*`` folders), within a subject only if the
subject alone is over the cap. A single file over the cap is refused with its path.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

RULES_FILE = ".datalad/rdr/bundles"
GB = 1000**3
DEFAULT_CAP = 20 * GB
# ZIP bytes around each member (local + central header with zip64 extras, name twice) and
# at the end; the plan counts them so the cap holds for the real ZIP.
MEMBER_OVERHEAD = 30 + 46 + 2 * 28
END_OVERHEAD = 22 + 56 + 20


class PlanError(Exception):
    pass


@dataclass(frozen=True)
class PlannedFile:
    """A file of the dataset as committed: its path, size, and where its bytes are."""

    path: str  # in the (super)dataset, POSIX
    size: int
    key: str | None  # git-annex key, for annexed files
    blob: str | None  # git blob id, for files in git
    repo: str  # the repository that holds it (a subdataset's own path for -r)
    repo_path: str  # its path in that repository

    @property
    def zip_cost(self) -> int:
        return self.size + MEMBER_OVERHEAD + 2 * len(self.path.encode())


@dataclass
class Bundle:
    name: str  # file name without .zip: "raw" or "raw-01"
    logical: str  # the logical bundle it is (part of): "raw"
    files: list[PlannedFile] = field(default_factory=list)

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def zip_estimate(self) -> int:
        return sum(f.zip_cost for f in self.files) + END_OVERHEAD


@dataclass
class Plan:
    commit: str
    bundles: list[Bundle]
    excluded: list[str]
    subdatasets: dict[str, str]  # path -> commit, for -r
    bids: bool


# -- rules ------------------------------------------------------------------------------

def glob_regex(glob: str) -> re.Pattern:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def read_rules(text: str, source: str = RULES_FILE) -> list[tuple[str, str]]:
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise PlanError(f"{source}:{number}: expected 'glob bundle', got {line!r}")
        glob, name = parts
        if name != "-" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise PlanError(f"{source}:{number}: bundle name {name!r} must be letters, "
                            f"digits, '_', '.' or '-'")
        rules.append((glob, name))
    return rules


def default_rules(files: list[PlannedFile], bids: bool,
                  large_derivative: int) -> list[tuple[str, str]]:
    if not bids:
        tops = sorted({f.path.split("/", 1)[0] for f in files if "/" in f.path})
        return [(f"{top}/**", _bundle_name(top)) for top in tops] + [("**", "core")]
    pipelines: dict[str, int] = {}
    for f in files:
        parts = f.path.split("/")
        if parts[0] == "derivatives" and len(parts) > 2:
            pipelines[parts[1]] = pipelines.get(parts[1], 0) + f.size
    large = [p for p, size in sorted(pipelines.items()) if size >= large_derivative]
    return ([("sub-*/**", "raw")]
            + [(f"derivatives/{p}/**", _bundle_name(p)) for p in large]
            + [("derivatives/**", "derivatives"), ("**", "core")])


def _bundle_name(folder: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder).strip("._-")
    return name or "core"


def _never_bundled(path: str) -> bool:
    # also inside subdatasets (-r): their own .datalad/ and .git* files
    return any(p == ".datalad" or p.startswith(".git") for p in path.split("/"))


# -- listing a commit ------------------------------------------------------------------

def git(repo, *args, input=None) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, text=True,
                          capture_output=True, input=input).stdout


def list_commit(repo: Path, commit: str, prefix: str = "", recursive: bool = False,
                subdatasets: dict | None = None) -> list[PlannedFile]:
    """Every file of ``commit``, annexed or in git, with its size (from the key for annex)."""
    out = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-z", "--long",
                          "--full-tree", commit], check=True, capture_output=True).stdout
    entries, small = [], []
    for record in out.decode("utf-8", "surrogateescape").split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, obj, size = meta.split()
        entries.append((mode, kind, obj, size, path))
        if kind == "blob" and (mode == "120000" or (size.isdigit() and int(size) < 512)):
            small.append(obj)
    contents = _cat_blobs(repo, small)
    files = []
    for mode, kind, obj, size, path in entries:
        full = f"{prefix}{path}"
        if kind == "commit":
            if subdatasets is not None:
                subdatasets[full] = obj
            if recursive:
                sub = repo / path
                if not (sub / ".git").exists():
                    raise PlanError(f"subdataset {full} is not installed; run "
                                    f"'datalad get -n {full}' first")
                files += list_commit(sub, obj, f"{full}/", True, subdatasets)
            continue
        key = _annex_key(contents.get(obj, b""), mode)
        if key is not None:
            files.append(PlannedFile(full, _key_size(key, repo), key, None, str(repo), path))
        elif mode != "120000":
            files.append(PlannedFile(full, int(size), None, obj, str(repo), path))
        # other symlinks (not into the annex) are not data: left out
    return files


def _cat_blobs(repo: Path, objects: list[str]) -> dict[str, bytes]:
    if not objects:
        return {}
    proc = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch"],
                          input="".join(f"{o}\n" for o in objects).encode(),
                          capture_output=True, check=True)
    data, pos, result = proc.stdout, 0, {}
    for obj in objects:
        header_end = data.index(b"\n", pos)
        _, _, size = data[pos:header_end].split()
        start = header_end + 1
        result[obj] = data[start:start + int(size)]
        pos = start + int(size) + 1
    return result


def _annex_key(content: bytes, mode: str) -> str | None:
    text = content.decode("utf-8", "replace").strip()
    if "annex/objects/" not in text or "\n" in text:
        return None
    if mode != "120000" and not text.startswith("/annex/objects/"):
        return None
    return PurePosixPath(text).name


def _key_size(key: str, repo: Path) -> int:
    m = re.match(r"^[A-Z0-9]+-s(\d+)-", key)
    if m:
        return int(m.group(1))
    raise PlanError(f"annex key {key} has no size field; re-add the file with a backend "
                    f"that records it (e.g. MD5E)")


# -- planning -------------------------------------------------------------------------

def make_plan(dataset: Path, commit: str = "HEAD", cap: int = DEFAULT_CAP,
              recursive: bool = False, large_derivative: int = GB,
              rules_text: str | None = None) -> Plan:
    dataset = Path(dataset)
    sha = git(dataset, "rev-parse", "--verify", f"{commit}^{{commit}}").strip()
    subdatasets: dict[str, str] = {}
    files = list_commit(dataset, sha, recursive=recursive, subdatasets=subdatasets)
    if rules_text is None:
        try:
            rules_text = git(dataset, "show", f"{sha}:{RULES_FILE}")
        except subprocess.CalledProcessError:
            rules_text = ""
    files = [f for f in files if not _never_bundled(f.path)]
    if not files:
        raise PlanError(f"nothing to export: commit {sha[:8]} has no files outside "
                        f".datalad/ and .git*")
    bids = any(f.path == "dataset_description.json" for f in files)
    rules = read_rules(rules_text) + default_rules(files, bids, large_derivative)
    compiled = [(glob_regex(g), name) for g, name in rules]
    groups: dict[str, list[PlannedFile]] = {}
    excluded = []
    for f in sorted(files, key=lambda f: f.path):
        name = next(name for rx, name in compiled if rx.fullmatch(f.path))
        if name == "-":
            excluded.append(f.path)
        else:
            groups.setdefault(name, []).append(f)
    bundles = []
    for logical in sorted(groups, key=_bundle_order):
        bundles += split_bundle(logical, groups[logical], cap)
    return Plan(sha, bundles, excluded, subdatasets, bids)


def _bundle_order(name: str):
    return ({"core": 0, "raw": 1}.get(name, 2), name == "derivatives", name)


def _subject(path: str) -> str:
    for part in path.split("/")[:-1]:
        if part.startswith("sub-"):
            return part
    return path


def split_bundle(logical: str, files: list[PlannedFile], cap: int) -> list[Bundle]:
    """Parts of at most ``cap`` ZIP bytes, cut between subjects where possible."""
    for f in files:
        if f.zip_cost + END_OVERHEAD > cap:
            raise PlanError(f"{f.path} ({f.size / GB:.2f} GB) is larger than the bundle "
                            f"cap ({cap / GB:.2f} GB); raise --max-bundle-size or leave it "
                            f"out with a '-' rule in {RULES_FILE}")
    whole = Bundle(logical, logical, list(files))
    if whole.zip_estimate <= cap:
        return [whole]
    subjects: dict[str, list[PlannedFile]] = {}
    for f in files:
        subjects.setdefault(_subject(f.path), []).append(f)
    units = []  # subjects, or single files of a subject that alone is over the cap
    for members in subjects.values():
        cost = sum(f.zip_cost for f in members)
        units += [members] if cost + END_OVERHEAD <= cap else [[f] for f in members]
    parts, current, used = [], [], END_OVERHEAD
    for unit in units:
        cost = sum(f.zip_cost for f in unit)
        if current and used + cost > cap:
            parts.append(current)
            current, used = [], END_OVERHEAD
        current += unit
        used += cost
    parts.append(current)
    width = max(2, len(str(len(parts))))
    return [Bundle(f"{logical}-{i:0{width}d}", logical, part)
            for i, part in enumerate(parts, 1)]
