"""Plan stage: which file of the dataset goes into which ZIP bundle.

The policy is plain data a user can read and override. Rules are ``glob -> bundle`` pairs,
first match wins; a dataset may put its own in ``.datalad/rdr/bundles`` (versioned), one rule a
line, ``#`` comments, bundle ``-`` to leave files out::

    # glob                      bundle
    derivatives/fmriprep/**     fmriprep
    stimuli/**                  core
    sourcedata/**               -

Globs: ``*`` and ``?`` stay within one path component, ``**`` crosses them; ``\\`` makes the
next character literal (``a\\*/**`` is the folder ``a*``). Rules of the dataset come first,
then the defaults:

- a BIDS dataset (``dataset_description.json`` at the top), as the RDR guide bundles it:
  ``sub-*/`` -> ``raw``; each pipeline under ``derivatives/`` with at least
  ``large_derivative`` bytes -> a bundle named after it; other derivatives -> ``derivatives``;
  everything else (top-level files, sidecars, ``stimuli/``, atlases) -> ``core``;
- any other dataset: one bundle per top-level folder, top-level files -> ``core``.

Bundle names come from folder names: a folder whose name is a bundle name (letters, digits,
``_``, ``.``, ``-``) gives its own; any other is transliterated to ASCII (``é`` -> ``e``, spaces
-> ``_``), and when that name is another folder's too, or nothing is left (``中文``), the
name gets a short hash of the folder's name (``a_b-7dbde9``, ``folder-7be2d2``), so two
folders never share a bundle by accident (a folder named ``core`` shares ``core`` with the
top-level files, as it always did).

DataLad's and git's own files (``.datalad/``, ``.git*``) are never bundled, nor is the
``CITATION.cff`` at the top of a dataset: datalad-rdr writes it on publication, and what the
tool writes must not change a bundle (list it under ``documentation:`` in the metadata file to
publish it as a separate public file).

A symlink committed in git (not into the annex) is exported as the content of the file it
points to in the same commit, under the link's own path (relative links, chains, links
through linked folders). A link that leaves the dataset, dangles, or points to a folder cannot
be: :attr:`Plan.links` names it and why, for pre-flight to refuse it.

Every bundle's ZIP stays under the cap: a bundle over it is split into numbered parts
(``raw-01``, ``raw-02``) at subject boundaries (``sub-*`` folders), within a subject only if the
subject alone is over the cap. A bundle that holds a file whose ZIP alone is over the cap
cannot be cut between files: it stays one bundle, one ZIP, written as split volumes of at most
the cap (``raw.zip.001``, ``raw.zip.002``, as ``7z a -v`` cuts them; :mod:`.volumes`). A rule
in ``.datalad/rdr/bundles`` that gives the large file a bundle of its own keeps the other
files out of the volumes.

The plan lists a commit with one ``git ls-tree`` and reads symlinks and small files (annex
pointers) with one ``git cat-file --batch`` per repository, whatever the number of files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import gitannex
from .sizes import GB
from .zipformat import END_OVERHEAD, MEMBER_OVERHEAD
from .zipstream import shown

RULES_FILE = ".datalad/rdr/bundles"
#: The cap on a bundle's ZIP (``--max-bundle-size``), as RDR's guide bundles by hand.
DEFAULT_CAP = 20 * GB


class PlanError(Exception):
    pass


@dataclass(frozen=True, slots=True)  # 100,000 of them: no dict each
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
        # the ZIP's bytes around the member (its name is written twice): the cap holds
        return self.size + MEMBER_OVERHEAD + 2 * len(self.path.encode())


@dataclass
class Bundle:
    name: str  # file name without .zip: "raw" or "raw-01"
    logical: str  # the logical bundle it is (part of): "raw"
    files: list[PlannedFile] = field(default_factory=list)
    #: the size of each split volume (the cap) when a file is too large for one ZIP file
    volume_size: int | None = None

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"

    @property
    def nbytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def zip_estimate(self) -> int:
        return sum(f.zip_cost for f in self.files) + END_OVERHEAD

    @property
    def server_files(self) -> int:
        """The files it takes on the server (at most: DEFLATE may need fewer volumes)."""
        if not self.volume_size:
            return 1
        return -(-self.zip_estimate // self.volume_size)


@dataclass
class Plan:
    commit: str
    bundles: list[Bundle]
    excluded: list[str]
    subdatasets: dict[str, str]  # path -> commit, for -r
    bids: bool
    # symlinks in git that cannot go: path -> (target, why), e.g. ("../x", "a folder")
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    unexported_subdatasets: list[str] = field(default_factory=list)  # without -r
    tool_files: list[PlannedFile] = field(default_factory=list)  # CITATION.cff: unbundled


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
        elif glob[i] == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
        else:
            out.append(re.escape(glob[i]))
            i += 1
    # DOTALL: a newline is a character of a name like any other (git allows it)
    return re.compile("".join(out), re.DOTALL)


class Rules:
    """``glob -> bundle`` rules in order, first match wins, as a function of a path.

    A run of ``folder/**`` rules (the defaults: one per top-level folder) is looked up by
    folder, so that a plan of thousands of folders does not try every rule on every file.
    """

    def __init__(self, rules: list[tuple[str, str]]):
        self.steps: list[tuple[re.Pattern | None, dict | str]] = []
        for index, (glob, name) in enumerate(rules):
            folder = _literal_folder(glob)
            if folder is None:
                self.steps.append((glob_regex(glob), name))
                continue
            if not self.steps or self.steps[-1][0] is not None:
                self.steps.append((None, {}))
            self.steps[-1][1].setdefault(folder, (index, name))

    def __call__(self, path: str) -> str:
        for regex, target in self.steps:
            if regex is None:  # the earliest rule of a folder the path is in
                best, cut = None, path.find("/")
                while cut != -1:
                    hit = target.get(path[:cut])
                    if hit is not None and (best is None or hit < best):
                        best = hit
                    cut = path.find("/", cut + 1)
                if best is not None:
                    return best[1]
            elif regex.fullmatch(path):
                return target
        raise PlanError(f"no bundle rule matches {shown(path)}")


def _literal_folder(glob: str) -> str | None:
    """``a b`` for the glob ``a b/**``; None for a glob with wildcards before ``/**``."""
    if not glob.endswith("/**"):
        return None
    folder = re.sub(r"\\(.)", "", glob[:-3])  # escaped characters do not count here
    if "*" in folder or "?" in folder or not glob[:-3]:
        return None
    return re.sub(r"\\(.)", r"\1", glob[:-3])


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
        names = bundle_names(tops, taken={"core"})
        return [(_literal(top) + "/**", names[top]) for top in tops] + [("**", "core")]
    pipelines: dict[str, int] = {}
    for f in files:
        parts = f.path.split("/")
        if parts[0] == "derivatives" and len(parts) > 2:
            pipelines[parts[1]] = pipelines.get(parts[1], 0) + f.size
    large = [p for p, size in sorted(pipelines.items()) if size >= large_derivative]
    names = bundle_names(large, taken={"raw", "derivatives", "core"})
    return ([("sub-*/**", "raw")]
            + [(f"derivatives/{_literal(p)}/**", names[p]) for p in large]
            + [("derivatives/**", "derivatives"), ("**", "core")])


def _literal(name: str) -> str:
    """``name`` as a glob that matches just itself (a folder may be called ``a*``)."""
    return re.sub(r"([*?\\])", r"\\\1", name)


def bundle_names(folders: list[str], taken: set[str] = frozenset()) -> dict[str, str]:
    """A bundle name per folder, distinct and safe ASCII (``[A-Za-z0-9_.-]``).

    A folder whose name already is one keeps it (so do existing users' bundles); any other
    gets its ASCII transliteration, unless that is empty, another folder's, or ``taken`` by
    a bundle of the defaults: then a short hash of the folder's name is added.
    """
    base = {f: _ascii_name(f) for f in folders}
    own = {f for f in folders if base[f] == f}
    shared = Counter(base[f] for f in folders if f not in own)
    names = {}
    for f in folders:
        b = base[f]
        if f in own or (b and shared[b] == 1 and b not in own and b not in taken):
            names[f] = b
        else:
            digest = hashlib.sha1(f.encode("utf-8", "surrogateescape")).hexdigest()[:6]
            names[f] = f"{b or 'folder'}-{digest}"
    return names


def _ascii_name(folder: str) -> str:
    ascii_ = unicodedata.normalize("NFKD", folder).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_).strip("._-")


def _never_bundled(path: str) -> bool:
    # also inside subdatasets (-r): their own .datalad/ and .git* files
    return any(p == ".datalad" or p.startswith(".git") for p in path.split("/"))


# -- listing a commit ------------------------------------------------------------------

CITATION = "CITATION.cff"  # written by datalad-rdr on publication (publish.py)
MAX_LINK_HOPS = 40  # as Linux resolves symlinks


@dataclass
class Listing:
    """A commit and its subdatasets as ``git ls-tree`` lists them, in the dataset's paths."""

    files: dict[str, PlannedFile] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # symlink in git -> its target
    folders: set[str] = field(default_factory=set)
    subdatasets: dict[str, str] = field(default_factory=dict)  # path -> commit
    unsized: list[str] = field(default_factory=list)  # annexed, with a key without size


def list_commit(repo: Path, commit: str, prefix: str = "", recursive: bool = False,
                listing: Listing | None = None) -> Listing:
    """Every file of ``commit``, annexed or in git, with its size (from the key for annex)."""
    listing = Listing() if listing is None else listing
    out = gitannex.ls_tree(repo, commit)
    entries, small = [], {}  # small: blob ids to read, once each
    for record in out.decode("utf-8", "surrogateescape").split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, obj, size = meta.split()
        if kind == "tree":
            listing.folders.add(prefix + path)
            continue
        entries.append((mode, kind, obj, size, path))
        if kind == "blob" and (mode == "120000" or (size.isdigit() and int(size) < 512)):
            small[obj] = None
    contents = gitannex.cat_blobs(repo, list(small))
    where = str(repo)  # one string shared by the repository's files
    for mode, kind, obj, size, path in entries:
        full = prefix + path if prefix else path  # one string, not two, at the top level
        if kind == "commit":
            listing.subdatasets[full] = obj
            if recursive:
                sub = repo / path
                if not (sub / ".git").exists():
                    raise PlanError(f"subdataset {full} is not installed; run "
                                    f"'datalad get -n {full}' first")
                listing.folders.add(full)
                list_commit(sub, obj, f"{full}/", True, listing)
            continue
        data = contents.get(obj) or b""
        key = gitannex.key_of_pointer(data, mode)
        if key is not None:
            key_size = gitannex.key_size(key)
            if key_size is None:
                listing.unsized.append(full)
            else:
                listing.files[full] = PlannedFile(full, key_size, key, None, where, path)
        elif mode == "120000":
            listing.links[full] = data.decode("utf-8", "surrogateescape")
        else:
            listing.files[full] = PlannedFile(full, int(size), None, obj, where, path)
    return listing


def resolve_link(listing: Listing, path: str) -> PlannedFile | str:
    """The file of the commit that the symlink ``path`` points to, or why there is none
    ("outside the dataset", "not in the commit", "a folder", ...).

    Resolved as the file system would, one component at a time, so links to links and
    through linked folders work; only what is in the commit counts.
    """
    target = listing.links[path]
    if target.startswith("/"):
        return "outside the dataset"
    here, pending, hops = path.split("/")[:-1], target.split("/"), 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not here:
                return "outside the dataset"
            here.pop()
            continue
        here.append(part)
        current = "/".join(here)
        if current in listing.links:
            hops += 1
            inner = listing.links[current]
            if hops > MAX_LINK_HOPS:
                return "a loop of symlinks"
            if inner.startswith("/"):
                return "outside the dataset"
            here.pop()
            pending = inner.split("/") + pending
        elif current in listing.files:
            if any(p not in ("", ".") for p in pending):
                break  # a file taken for a folder
            return listing.files[current]
        elif current in listing.subdatasets and current not in listing.folders:
            return f"in the subdataset {shown(current)}, exported only with -r"
        elif current not in listing.folders:
            break
    else:
        return "a folder"
    return "not in the commit"


# -- planning -------------------------------------------------------------------------

def make_plan(dataset: Path, commit: str = "HEAD", cap: int = DEFAULT_CAP,
              recursive: bool = False, large_derivative: int = GB,
              rules_text: str | None = None) -> Plan:
    dataset = Path(dataset)
    sha = gitannex.resolve(dataset, f"{commit}^{{commit}}")
    if sha is None:
        raise PlanError(f"{commit!r} is not a commit of the dataset {dataset}; give a "
                        f"commit id, branch or tag")
    listing = list_commit(dataset, sha, recursive=recursive)
    if rules_text is None:
        rules_text = gitannex.git_or_none(dataset, "show", f"{sha}:{RULES_FILE}") or ""
    files, links = dict(listing.files), {}
    for path in listing.links:
        target = resolve_link(listing, path)
        if isinstance(target, PlannedFile):
            files[path] = replace(target, path=path)
        else:
            links[path] = (listing.links[path], target)
    # what datalad-rdr writes itself, at the top of the dataset and of each subdataset
    own = {CITATION} | {f"{sub}/{CITATION}" for sub in listing.subdatasets if recursive}
    tool_files = [files.pop(p) for p in sorted(own) if p in files]
    files = [f for f in files.values() if not _never_bundled(f.path)]
    if not files:
        raise PlanError(f"nothing to export: commit {sha[:8]} has no files outside "
                        f".datalad/ and .git*")
    bids = any(f.path == "dataset_description.json" for f in files)
    rules = read_rules(rules_text) + default_rules(files, bids, large_derivative)
    bundle_of = Rules(rules)

    groups: dict[str, list[PlannedFile]] = {}
    excluded = []
    for f in sorted(files, key=lambda f: f.path):
        name = bundle_of(f.path)
        if name == "-":
            excluded.append(f.path)
        else:
            groups.setdefault(name, []).append(f)
    # files that cannot be bundled block the export only if a bundle would have them
    unbundled = {p for p in [*links, *listing.unsized] if not _never_bundled(p)}
    left_out = {p for p in unbundled if bundle_of(p) == "-"}
    excluded = sorted(excluded + list(left_out))
    unbundled -= left_out
    unsized = sorted(p for p in listing.unsized if p in unbundled)
    if unsized:
        raise PlanError(
            f"the annex key of {some_paths(unsized)} records no size (as keys of 'git annex "
            f"addurl --relaxed' or --fast do), and a bundle is laid out before it is sent: "
            f"'datalad get' the file(s) and 'git annex migrate --backend MD5E' them, or "
            f"leave them out with a '-' rule in {RULES_FILE}")
    links = {p: link for p, link in sorted(links.items()) if p in unbundled}
    bundles = []
    for logical in sorted(groups, key=_bundle_order):
        bundles += split_bundle(logical, groups[logical], cap)
    return Plan(sha, bundles, excluded, listing.subdatasets, bids, links,
                [] if recursive else sorted(listing.subdatasets), tool_files)


def some_paths(paths: list[str], n: int = 3) -> str:
    """The first ``n`` paths for a one-line message, and how many more."""
    listed = ", ".join(shown(p) for p in paths[:n])
    return listed + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _bundle_order(name: str):
    return ({"core": 0, "raw": 1}.get(name, 2), name == "derivatives", name)


def _subject(path: str) -> str:
    for part in path.split("/")[:-1]:
        if part.startswith("sub-"):
            return part
    return path


def split_bundle(logical: str, files: list[PlannedFile], cap: int) -> list[Bundle]:
    """Parts of at most ``cap`` ZIP bytes, cut between subjects where possible; one
    bundle written as volumes of ``cap`` bytes when a file's ZIP alone is over it."""
    if any(f.zip_cost + END_OVERHEAD > cap for f in files):
        return [Bundle(logical, logical, list(files), volume_size=cap)]
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
