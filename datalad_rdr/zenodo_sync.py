"""``datalad zenodo-sync``: read zenodo.yaml, compare with Zenodo, decide, act, remember.

The stages, in the order the data goes through them:

1. **config** -- StepUp RepRep's zenodo.yaml, both forms (3.1: ``path_token``, ``paths``,
   ``path_readme``, ``code_repository``; 4.x: ``custom_fields``, paths and ``--description``
   on the command line) is read and validated into the RDM JSON StepUp would send
   (:func:`load_config`). Additions: ``paths`` may hold folders and globs, and
   ``{zip: <folder or glob>, name: <name>.zip}`` sends a folder as one deterministic ZIP.
2. **members** -- what goes to Zenodo: one *member* per file key (Zenodo has no folders).
   Sizes and MD5s come from the annex key where possible, so nothing is fetched to find out
   that nothing changed (:func:`plan_members`). Duplicate names and Zenodo's 100-file /
   50 GB limits are refused here, before anything is sent.
3. **compare and decide** -- the draft or record is read; only members whose MD5 differs are
   fetched (``datalad get``), built (ZIPs) and sent; files no longer listed are deleted;
   metadata is PUT only when it differs (:class:`Sync`).
4. **remember** -- StepUp's record id file and ``.datalad/rdr/zenodo.json`` (concept and
   version ids, DOIs, what each file was) are saved with ``datalad save``; after a publish the
   Zenodo URL of each annexed file sent as itself is registered with ``git annex registerurl``.

Everything server-specific is in :mod:`datalad_rdr.zenodo`.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from datalad.interface.results import get_status_dict
from datalad.log import log_progress

from .http import Backoff
from .zenodo import (
    MAX_BYTES,
    MAX_FILES,
    Entry,
    Zenodo,
    ZenodoError,
    dois,
    file_entries,
    version_of,
)

lgr = logging.getLogger("datalad.rdr.zenodo_sync")

ACTION = "zenodo-sync"
DEFAULT_ENDPOINT = "https://sandbox.zenodo.org/api"  # StepUp's default: never production
RECORD_FILE = ".datalad/rdr/zenodo.json"
MANIFEST_FILE = ".datalad/rdr/manifest.json"
CONFIG_NAMES = ("zenodo.yaml", "sync_zenodo.yaml", "zenodo.yml", "sync_zenodo.yml")


class ConfigError(Exception):
    """zenodo.yaml (or the paths) cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: list[str], source: str = "zenodo.yaml"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class SyncError(Exception):
    """Something the user has to decide or fix before Zenodo can be brought up to date."""


# == 1. config ===============================================================================
# Zenodo's vocabularies as far as zenodo.yaml uses them (StepUp's docs list the same ids).
RESOURCE_TYPES = set("""
audio dataset event image image-diagram image-drawing image-figure image-other image-photo
image-plot lesson model other physicalobject poster presentation publication
publication-annotationcollection publication-article publication-book
publication-conferencepaper publication-conferenceproceeding
publication-datamanagementplan publication-datapaper publication-deliverable
publication-dissertation publication-journal publication-milestone publication-other
publication-patent publication-peerreview publication-preprint publication-proposal
publication-report publication-section publication-softwaredocumentation
publication-standard publication-taxonomictreatment publication-technicalnote
publication-thesis publication-workingpaper software software-computationalnotebook video
workflow""".split())
RELATION_TYPES = set("""
cites compiles continues describes documents hasmetadata haspart hasversion iscitedby
iscompiledby iscontinuedby isderivedfrom isdescribedby isdocumentedby isidenticalto
ismetadatafor isnewversionof isobsoletedby isoriginalformof ispartof ispreviousversionof
ispublishedin isreferencedby isrequiredby isreviewedby issourceof issupplementedby
issupplementto isvariantformof isversionof obsoletes references requires reviews""".split())
IDENTIFIER_SCHEMES = set("""
ark arxiv ads crossreffunderid doi ean13 eissn grid handle igsn isbn isni issn istc lissn
lsid pmid purl upc url urn w3id other""".split())
DEVELOPMENT_STATUS = {"abandoned", "active", "concept", "inactive", "moved", "suspended",
                      "unsupported", "wip"}

# Keys of zenodo.yaml: StepUp 4.x, plus those of 3.1 (and ``paths``, which we keep).
TOP_KEYS = {"path_record_id", "endpoint", "metadata", "custom_fields", "access",
            "path_token", "path_readme", "code_repository", "paths"}
METADATA_KEYS = {"title", "version", "resource_type", "publisher", "creators", "keywords",
                 "license", "copyright", "languages", "description", "related", "funding"}
# The RDM fields we set; one of them online but not wanted here is a difference.
MANAGED_METADATA = {"title", "version", "resource_type", "publisher", "subjects", "rights",
                    "copyright", "languages", "description", "creators", "publication_date",
                    "related_identifiers", "funding"}
CUSTOM_FIELDS = {  # zenodo.yaml name -> Zenodo's custom field
    "code_repository": "code:codeRepository",
    "development_status": "code:developmentStatus",
    "programming_languages": "code:programmingLanguage",
    "rights_holder": "dc:rightsHolder",
    "journal": "journal:journal",
    "meeting": "meeting:meeting",
    "imprint": "imprint:imprint",
    "thesis": "thesis:thesis",
}
NESTED_FIELDS = {
    "journal": ("title", "issue", "volume", "pages", "issn"),
    "meeting": ("title", "acronym", "dates", "place", "session", "session_part", "url",
                "identifiers"),
    "imprint": ("title", "isbn", "pages", "place", "edition"),
    "thesis": ("university", "department", "type", "date_submitted", "date_defended"),
}

_ROR = re.compile(r"^0[0-9a-hjkmnp-tv-z]{6}[0-9]{2}$")
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


def _iso7064_ok(digits: str) -> bool:
    """The check character of ORCID and ISNI (ISO 7064 11,2)."""
    total = 0
    for ch in digits[:-1]:
        total = (total + int(ch)) * 2
    result = (12 - total % 11) % 11
    return digits[-1] == ("X" if result == 10 else str(result))


def _orcid_ok(value: str) -> bool:
    return bool(re.fullmatch(r"\d{4}-\d{4}-\d{4}-\d{3}[\dX]", value)) and \
        _iso7064_ok(value.replace("-", ""))


def _isni_ok(value: str) -> bool:
    compact = value.replace(" ", "").replace("-", "")
    return bool(re.fullmatch(r"\d{15}[\dX]", compact)) and _iso7064_ok(compact)


def _url_ok(value: str) -> bool:
    try:
        parsed = urlparse(value)
        return parsed.scheme in ("http", "https", "ftp", "ftps") and bool(parsed.hostname)
    except ValueError:
        return False


def _drop_empty(**values) -> dict:
    """A JSON object without the unset keys (as StepUp builds them, so both send the same)."""
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


class _Reader:
    """Collects every problem of a config with where it is, instead of stopping at one."""

    def __init__(self):
        self.problems: list[str] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value, where: str, keys: set | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.bad(where, f"expected a mapping, got {type(value).__name__}")
            return {}
        for key in sorted(set(value) - (keys or set(value)), key=str):
            self.bad(f"{where}.{key}" if where else key, "unknown key")
        return value

    def string(self, d: dict, key: str, where: str, required=False, min_len=1):
        value = d.get(key)
        if value is None:
            if required:
                self.bad(f"{where}{key}", "required")
            return None
        if not isinstance(value, str):
            self.bad(f"{where}{key}", f"expected a string, got {type(value).__name__} "
                                      f"{value!r}; put the value in quotes")
            return None
        if len(value.strip()) < min_len:
            self.bad(f"{where}{key}", f"at least {min_len} character(s)")
            return None
        return value

    def strings(self, d: dict, key: str, where: str) -> list[str]:
        """A list of strings; one string may be written on its own (StepUp 4 allows it)."""
        value = d.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.bad(f"{where}{key}", "expected a string or a list of strings")
            return []
        return value

    def items(self, d: dict, key: str, where: str) -> list:
        value = d.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.bad(f"{where}{key}", "expected a list")
            return []
        return value

    # -- metadata parts ----------------------------------------------------------------
    def organization(self, value, where: str) -> dict | None:
        org = self.mapping(value, where, {"name", "ror"})
        name, ror = org.get("name"), org.get("ror")
        if (name is None) == (ror is None):
            self.bad(where, "give exactly one of 'name' or 'ror'")
            return None
        if ror is not None:
            if not isinstance(ror, str) or not _ROR.match(ror):
                self.bad(f"{where}.ror", f"not a ROR id: {ror!r} (nine characters starting "
                                         "with 0, e.g. '03yrm5c26', no https://ror.org/)")
                return None
            return {"id": ror}
        if not isinstance(name, str) or not name.strip():
            self.bad(f"{where}.name", "expected a non-empty string")
            return None
        return {"name": name}

    def creator(self, value, where: str) -> dict | None:
        c = self.mapping(value, where, {"family_name", "given_name", "name", "identifiers",
                                        "affiliations"})
        family = self.string(c, "family_name", f"{where}.")
        given = self.string(c, "given_name", f"{where}.")
        name = self.string(c, "name", f"{where}.")
        if family is None and name is not None:
            # StepUp's docs show ``name: 'Last, First'``, which its code silently dropped.
            family, _, rest = name.partition(",")
            family, given = family.strip(), given or (rest.strip() or None)
        if not family:
            self.bad(f"{where}.family_name", "required (creators are persons on Zenodo)")
        identifiers = []
        ids = self.mapping(c.get("identifiers"), f"{where}.identifiers", {"orcid", "isni"})
        for scheme, value in ids.items():
            ok = isinstance(value, str) and (_orcid_ok(value) if scheme == "orcid"
                                             else _isni_ok(value))
            if not ok:
                self.bad(f"{where}.identifiers.{scheme}",
                         f"not a valid {scheme.upper()}: {value!r} (no URL prefix, e.g. "
                         "'0000-0002-1825-0097')")
            else:
                identifiers.append({"scheme": scheme, "identifier": value})
        affiliations = [self.organization(a, f"{where}.affiliations[{i}]")
                        for i, a in enumerate(self.items(c, "affiliations", f"{where}."))]
        person = _drop_empty(type="personal", family_name=family, given_name=given,
                             identifiers=identifiers)
        return _drop_empty(person_or_org=person,
                           affiliations=[a for a in affiliations if a])

    def identifier(self, value, where: str) -> dict | None:
        """An award's or a meeting's identifier: ``{identifier, scheme?}`` (StepUp 4) or
        ``{<scheme>: <identifier>}`` (StepUp 3.1)."""
        ident = self.mapping(value, where)
        if "identifier" not in ident and len(ident) == 1:
            (scheme, identifier), = ident.items()
        else:
            ident = self.mapping(value, where, {"identifier", "scheme"})
            scheme, identifier = ident.get("scheme"), ident.get("identifier")
        if not isinstance(identifier, str) or not identifier:
            self.bad(f"{where}.identifier", "required")
            return None
        if scheme is not None and scheme not in IDENTIFIER_SCHEMES:
            self.bad(f"{where}.scheme", f"unknown identifier scheme {scheme!r}")
            return None
        self._check_identifier(scheme, identifier, where)
        return _drop_empty(scheme=scheme, identifier=identifier)

    def _check_identifier(self, scheme, identifier: str, where: str) -> None:
        if scheme == "doi" and not _DOI.match(identifier):
            self.bad(f"{where}.identifier", f"not a DOI: {identifier!r} (e.g. 10.5281/zenodo.1)")
        if scheme == "url" and not _url_ok(identifier):
            self.bad(f"{where}.identifier", f"not an http(s) or ftp(s) URL: {identifier!r}")

    def related(self, value, where: str) -> dict | None:
        r = self.mapping(value, where, {"scheme", "identifier", "relation_type",
                                        "resource_type"})
        scheme = self.string(r, "scheme", f"{where}.", required=True)
        identifier = self.string(r, "identifier", f"{where}.", required=True)
        relation = self.string(r, "relation_type", f"{where}.", required=True)
        rtype = self.string(r, "resource_type", f"{where}.")
        if scheme and scheme not in IDENTIFIER_SCHEMES:
            self.bad(f"{where}.scheme", f"unknown identifier scheme {scheme!r}; one of "
                                        f"{', '.join(sorted(IDENTIFIER_SCHEMES))}")
        if relation and relation not in RELATION_TYPES:
            self.bad(f"{where}.relation_type", f"unknown relation {relation!r}")
        if rtype and rtype not in RESOURCE_TYPES:
            self.bad(f"{where}.resource_type", f"unknown resource type {rtype!r}")
        if not (scheme and identifier and relation):
            return None
        self._check_identifier(scheme, identifier, where)
        out = {"scheme": scheme, "identifier": identifier, "relation_type": {"id": relation}}
        if rtype:
            out["resource_type"] = {"id": rtype}
        return out

    def funding(self, value, where: str) -> dict | None:
        f = self.mapping(value, where, {"funder", "award"})
        funder = self.organization(f.get("funder"), f"{where}.funder")
        a = self.mapping(f.get("award"), f"{where}.award",
                         {"id", "title", "number", "identifiers"})
        award_id = self.string(a, "id", f"{where}.award.")
        title = self.string(a, "title", f"{where}.award.")
        number = self.string(a, "number", f"{where}.award.")
        if (award_id is None) == (title is None and number is None):
            self.bad(f"{where}.award", "give either 'id', or 'title' and/or 'number'")
        identifiers = [self.identifier(i, f"{where}.award.identifiers[{n}]")
                       for n, i in enumerate(self.items(a, "identifiers", f"{where}.award."))]
        award = _drop_empty(id=award_id, title=None if title is None else {"en": title},
                            number=number, identifiers=[i for i in identifiers if i])
        return {"funder": funder, "award": award} if funder else None

    def metadata(self, value) -> dict:
        m = self.mapping(value, "metadata", METADATA_KEYS)
        if not m:
            self.bad("metadata", "required")
            return {}
        w = "metadata."
        title = self.string(m, "title", w, required=True, min_len=3)
        version = self.string(m, "version", w, required=True)
        rtype = self.string(m, "resource_type", w, required=True)
        if rtype and rtype not in RESOURCE_TYPES:
            self.bad(f"{w}resource_type", f"unknown resource type {rtype!r}; e.g. dataset, "
                                          "software, publication-article")
        creators = [self.creator(c, f"{w}creators[{i}]")
                    for i, c in enumerate(self.items(m, "creators", w))]
        if not creators:
            self.bad(f"{w}creators", "at least one creator is required")
        languages = self.strings(m, "languages", w)
        for lang in languages:
            if not re.fullmatch(r"[a-z]{3}", lang):
                self.bad(f"{w}languages", f"not an ISO 639-3 code: {lang!r} (e.g. eng)")
        related = [self.related(r, f"{w}related[{i}]")
                   for i, r in enumerate(self.items(m, "related", w))]
        funding = [self.funding(f, f"{w}funding[{i}]")
                   for i, f in enumerate(self.items(m, "funding", w))]
        return _drop_empty(
            title=title,
            version=version,
            resource_type={"id": rtype} if rtype else None,
            publisher=self.string(m, "publisher", w),
            subjects=[{"subject": k} for k in self.strings(m, "keywords", w)],
            rights=[{"id": lic.lower()} for lic in self.strings(m, "license", w)],
            copyright=self.string(m, "copyright", w),
            languages=[{"id": lang} for lang in languages],
            description=self.string(m, "description", w, min_len=3),
            creators=[c for c in creators if c],
            related_identifiers=[r for r in related if r],
            funding=[f for f in funding if f],
        )

    def custom_fields(self, value, code_repository) -> dict:
        cf = self.mapping(value, "custom_fields", set(CUSTOM_FIELDS))
        if code_repository is not None:  # StepUp 3.1 had it at the top level
            if "code_repository" in cf:
                self.bad("code_repository", "given twice (also in custom_fields)")
            cf = {**cf, "code_repository": code_repository}
        out = {}
        w = "custom_fields."
        url = self.string(cf, "code_repository", w)
        if url is not None:
            if _url_ok(url):
                out[CUSTOM_FIELDS["code_repository"]] = url
            else:
                self.bad(f"{w}code_repository", f"not an http(s) or ftp(s) URL: {url!r}")
        status = self.string(cf, "development_status", w)
        if status is not None:
            if status in DEVELOPMENT_STATUS:
                out[CUSTOM_FIELDS["development_status"]] = {"id": status}
            else:
                self.bad(f"{w}development_status", f"one of {sorted(DEVELOPMENT_STATUS)}")
        languages = self.strings(cf, "programming_languages", w)
        if languages:
            out[CUSTOM_FIELDS["programming_languages"]] = [{"id": x} for x in languages]
        holders = self.strings(cf, "rights_holder", w)
        if holders:
            out[CUSTOM_FIELDS["rights_holder"]] = holders
        for name, keys in NESTED_FIELDS.items():
            section = self.mapping(cf.get(name), f"{w}{name}", set(keys))
            values = {}
            for key in keys:
                if key == "identifiers":
                    ids = [self.identifier(i, f"{w}{name}.identifiers[{n}]") for n, i in
                           enumerate(self.items(section, key, f"{w}{name}."))]
                    values[key] = [i for i in ids if i]
                else:
                    values[key] = self.string(section, key, f"{w}{name}.")
            nested = _drop_empty(**values)
            if nested:
                out[CUSTOM_FIELDS[name]] = nested
        return out

    def access(self, value) -> dict:
        a = self.mapping(value, "access", {"record", "files"})
        out = {}
        for level in ("record", "files"):
            v = a.get(level, "public")
            if v not in ("public", "restricted"):
                self.bad(f"access.{level}", "public or restricted")
                v = "public"
            out[level] = v
        return out


@dataclass
class PathSpec:
    """One entry of ``paths``: a file, folder or glob; ``zip`` sends it as one ZIP."""

    pattern: Path
    zip: bool = False
    name: str | None = None
    origin: str = "zenodo.yaml"


@dataclass
class SyncConfig:
    path: Path
    base: Path  # relative paths in the config are relative to its folder
    path_record_id: Path
    endpoint: str
    path_token: Path | None
    metadata: dict  # RDM metadata, without publication_date (decided per run)
    access: dict
    custom_fields: dict
    paths: list[PathSpec]

    @property
    def version(self) -> str:
        return self.metadata["version"]


def _load_file(path: Path):
    if path.name == ".zenodo.json":
        raise ConfigError(["this is Zenodo's GitHub-release metadata file, not a "
                           "zenodo.yaml"], str(path))
    loaders = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".toml": "toml"}
    kind = loaders.get(path.suffix.lower())
    if kind is None:
        raise ConfigError([f"unknown format {path.suffix!r}; use .yaml, .yml, .json or "
                           ".toml"], str(path))
    try:
        if kind == "toml":
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        else:
            text = path.read_text(encoding="utf-8")
            if kind == "json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(["no such file"], str(path)) from None
    except OSError as exc:
        raise ConfigError([f"cannot be read: {exc.strerror}"], str(path)) from None
    except Exception as exc:  # noqa: BLE001 - the syntax errors of YAML, JSON and TOML
        raise ConfigError([f"cannot be parsed: {exc}"], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(["expected a mapping at the top level"], str(path))
    return data


def load_description(path: Path) -> str:
    """A README for Zenodo's description: Markdown rendered to HTML (as StepUp does)."""
    suffix = path.suffix.lower()
    if suffix not in (".md", ".html"):
        raise ConfigError([f"{path.name}: the description must be a .md or .html file"])
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    if suffix == ".md":
        from markdown_it import MarkdownIt

        text = MarkdownIt().render(text)
    if len(text.strip()) < 3:
        raise ConfigError([f"{path.name}: too short for a description (3 characters)"])
    return text


def load_config(path: Path, cli_paths=(), description: Path | None = None) -> SyncConfig:
    """Read and check zenodo.yaml; raise :class:`ConfigError` listing every problem."""
    path = Path(path).absolute()
    data = _load_file(path)
    base = path.parent
    r = _Reader()
    r.mapping(data, "", TOP_KEYS)
    record_id = r.string(data, "path_record_id", "", required=True)
    endpoint = (r.string(data, "endpoint", "") or DEFAULT_ENDPOINT).rstrip("/")
    if not _url_ok(endpoint):
        r.bad("endpoint", f"not a URL: {endpoint!r}")
    token = r.string(data, "path_token", "")
    metadata = r.metadata(data.get("metadata"))
    custom = r.custom_fields(data.get("custom_fields"), data.get("code_repository"))
    access = r.access(data.get("access"))
    readme = r.string(data, "path_readme", "")
    specs = []
    for i, item in enumerate(r.items(data, "paths", "")):
        where = f"paths[{i}]"
        if isinstance(item, str):
            specs.append(PathSpec(base / item, origin=item))
        elif isinstance(item, dict):
            entry = r.mapping(item, where, {"zip", "name"})
            target = entry.get("zip")
            name = r.string(entry, "name", f"{where}.")
            if not isinstance(target, str) or not target:
                r.bad(f"{where}.zip", "the folder or glob to send as one ZIP")
            elif name is not None and not name.lower().endswith(".zip"):
                r.bad(f"{where}.name", f"a ZIP's name ends in .zip: {name!r}")
            else:
                specs.append(PathSpec(base / target, zip=True, name=name, origin=target))
        else:
            r.bad(where, "a path, or {zip: <folder or glob>, name: <name>.zip}")
    specs += [PathSpec(Path(p).absolute(), origin=str(p)) for p in cli_paths]
    if readme and description:
        r.bad("path_readme", "and --description both given; keep one")
    if readme or description:
        if metadata.get("description"):
            r.bad("metadata.description", "given twice (also as a README file)")
        else:
            try:
                metadata["description"] = load_description(
                    Path(description) if description else base / readme)
            except ConfigError as exc:
                r.problems.extend(exc.problems)
    if r.problems:
        raise ConfigError(r.problems, path.name)
    return SyncConfig(
        path=path, base=base, path_record_id=base / record_id, endpoint=endpoint,
        path_token=None if token is None else base / os.path.expanduser(token),
        metadata=metadata, access=access, custom_fields=custom, paths=specs)


def find_config(root: Path) -> Path:
    for name in CONFIG_NAMES:
        if (root / name).exists():
            return root / name
    raise ConfigError([f"none of {', '.join(CONFIG_NAMES)} in {root}; name the config "
                       "file"], "zenodo-sync")


# == 2. members ==============================================================================
@dataclass
class Member:
    """One file on Zenodo, and where its bytes are here."""

    key: str  # the name on Zenodo (flat: no folders)
    files: list[Path]  # one file, or the files of a ZIP
    origin: str  # how zenodo.yaml or the command line named it
    source: Path  # the file, or the folder or glob of a ZIP
    zip_root: Path | None = None  # ZIP: names inside are relative to this
    size: int | None = None
    md5: str | None = None
    annex_key: str | None = None  # sent as itself, and annexed unmodified
    repo: Path | None = None  # the repository holding annex_key
    fingerprint: str | None = None  # ZIP: what its members are (names, keys, hashes)
    local: Path | None = None  # the bytes to send (for a ZIP: once built)

    @property
    def is_zip(self) -> bool:
        return self.zip_root is not None

    @property
    def path(self) -> Path:
        return self.source


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        found += [Path(root) / f for f in files]
    return sorted(found)


def _expand(spec: PathSpec) -> list[Path]:
    pattern = str(spec.pattern)
    if glob.has_magic(pattern):
        hits = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    else:
        hits = [spec.pattern] if os.path.lexists(spec.pattern) else []
    files = []
    for hit in hits:
        files += _walk(hit) if hit.is_dir() and not hit.is_symlink() else [hit]
    return files


def _inspect(ds, files: list[Path]) -> dict[Path, dict]:
    """What git and git-annex know of each file (key, size, state), without its content."""
    root = Path(ds.path)
    inside = [f for f in files if root in f.parents]
    if not inside:
        return {}
    info = {}
    for res in ds.status(path=[str(f) for f in inside], annex="basic", recursive=True,
                         untracked="all", eval_subdataset_state="no",
                         result_renderer="disabled", on_failure="ignore",
                         return_type="generator"):
        if res.get("status") == "ok" and res.get("type") in ("file", "symlink"):
            info[Path(res["path"])] = res
    return info


def _md5_from_key(key: str) -> str | None:
    m = re.match(r"^MD5E?-s\d+(?:-[^-]+)*--([0-9a-f]{32})", key)
    return m.group(1) if m else None


def _md5_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def plan_members(ds, config: SyncConfig, known: dict, max_files: int = MAX_FILES,
                 max_bytes: int = MAX_BYTES) -> list[Member]:
    """The files to send, as Zenodo will name them, with what is known of each without
    reading content. ``known`` is the last run's record of files (for cached MD5s)."""
    problems, members = [], []
    for spec in config.paths:
        files = _expand(spec)
        if not files:
            problems.append(f"{spec.origin}: matches no file")
        elif spec.zip:
            root = spec.pattern.parent if not glob.has_magic(str(spec.pattern)) \
                else config.base
            name = spec.name or f"{spec.pattern.name}.zip"
            members.append(Member(name, files, spec.origin, spec.pattern, zip_root=root))
        else:
            members += [Member(f.name, [f], spec.origin, f) for f in files]
    listed = set()  # the same file named twice (config and command line) is sent once
    members = [m for m in members
               if m.is_zip or not (m.source in listed or listed.add(m.source))]
    seen: dict[str, Member] = {}
    for m in members:
        other = seen.setdefault(m.key, m)
        if other is not m:
            problems.append(
                f"two files would be called {m.key!r} on Zenodo, which has no folders: "
                f"{_show(other.path, ds)} and {_show(m.path, ds)}; rename one, or send "
                "a folder as a ZIP")
    if problems:
        raise ConfigError(problems, config.path.name)
    if len(members) > max_files:
        raise ConfigError([f"{len(members)} files to send, but Zenodo takes at most "
                           f"{max_files} per record; send folders as ZIPs "
                           f"({{zip: <folder>}} in paths)"], config.path.name)
    info = _inspect(ds, [f for m in members for f in m.files])
    by_key = {v.get("annex_key"): v for v in known.values() if v.get("annex_key")}
    for m in members:
        if m.is_zip:
            m.fingerprint = _fingerprint(m, info)
            cached = known.get(m.key) or {}
            if cached.get("fingerprint") == m.fingerprint:
                m.md5, m.size = cached.get("md5"), cached.get("size")
            continue
        path = m.files[0]
        st = info.get(path, {})
        if st.get("key") and st.get("state") == "clean":
            m.annex_key, m.size = st["key"], st.get("bytesize")
            m.repo = Path(st.get("parentds") or ds.path)
            m.md5 = _md5_from_key(m.annex_key) or (by_key.get(m.annex_key) or {}).get("md5")
        elif path.exists():
            m.size = path.stat().st_size
        else:
            problems.append(f"{_show(path, ds)}: no content here and not annexed")
    if problems:
        raise ConfigError(problems, config.path.name)
    check_limits(members, ds, max_bytes)
    return members


def check_limits(members: list[Member], ds, max_bytes: int) -> None:
    """Zenodo's quota is per record and so per file; refuse what cannot fit, by name."""
    problems = [f"{_show(m.path, ds)} ({m.key}) is {_size(m.size)}, over the "
                f"{_size(max_bytes)} Zenodo takes per record"
                for m in members if m.size is not None and m.size > max_bytes]
    total = sum(m.size or 0 for m in members)
    if not problems and total > max_bytes:
        problems.append(f"the files add up to {_size(total)}, over the {_size(max_bytes)} "
                        "Zenodo takes per record")
    if problems:
        raise ConfigError(problems, "limits")


def _fingerprint(m: Member, info: dict) -> str:
    """What a ZIP holds, by name and content identity: the same inputs make the same ZIP."""
    h = hashlib.sha256(ZIP_FORMAT.encode())
    for path in sorted(m.files, key=lambda p: _arcname(p, m.zip_root)):
        st = info.get(path, {})
        if st.get("key") and st.get("state") == "clean":
            ident = st["key"]
        elif st.get("gitshasum") and st.get("state") == "clean":
            ident = "git:" + st["gitshasum"]
        else:
            ident = "md5:" + _md5_of(path)
        h.update(f"{_arcname(path, m.zip_root)}\0{ident}\0{_mode(path)}\n".encode())
    return h.hexdigest()


def _arcname(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _mode(path: Path) -> int:
    try:
        return 0o755 if os.stat(path).st_mode & 0o111 else 0o644
    except OSError:  # absent annexed content: the mode is git's, and git keeps 644
        return 0o644


ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a ZIP can hold
ZIP_FORMAT = "zenodo-sync zip 1\n"  # change when build_zip makes other bytes of the same files


def build_zip(m: Member, dest: Path) -> None:
    """A deterministic ZIP: sorted names, fixed times and modes, one compression level."""
    with zipfile.ZipFile(dest, "w") as zf:
        for path in sorted(m.files, key=lambda p: _arcname(p, m.zip_root)):
            info = zipfile.ZipInfo(_arcname(path, m.zip_root), date_time=ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = (0o100000 | _mode(path)) << 16
            size = path.stat().st_size
            with open(path, "rb") as src, \
                    zf.open(info, "w", force_zip64=size > 2**31) as out:
                while chunk := src.read(1024 * 1024):
                    out.write(chunk)
    m.local, m.size, m.md5 = dest, dest.stat().st_size, _md5_of(dest)


def _show(path: Path, ds) -> str:
    try:
        return path.relative_to(ds.path).as_posix()
    except ValueError:
        return str(path)


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


# == 3. compare and decide ===================================================================
def _covers(have, want) -> bool:
    """``have`` (Zenodo's) says at least what ``want`` says: Zenodo adds titles and names
    to vocabulary entries and people, which are not differences."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _covers(have[k], v)
                                              for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and \
            all(_covers(h, w) for h, w in zip(have, want))
    return have == want


def metadata_changes(want: dict, have: dict) -> list[str]:
    """The fields in which the draft or record ``have`` differs from the body ``want``."""
    changed = []
    for section, managed in (("metadata", MANAGED_METADATA),
                             ("custom_fields", set(CUSTOM_FIELDS.values()))):
        w, h = want.get(section) or {}, have.get(section) or {}
        # an empty value online is no value (StepUp 3.1 sends empty lists and nulls)
        h = {k: v for k, v in h.items() if k in w or v not in (None, "", [], {})}
        for key in sorted(set(w) | (set(h) & managed)):
            if key not in w or key not in h or not _covers(h[key], w[key]):
                changed.append(f"{section}.{key}")
    if not _covers(have.get("access") or {}, want.get("access") or {}):
        changed.append("access")
    wf, hf = want.get("files") or {}, have.get("files") or {}
    for key in ("order", "default_preview"):
        if key in wf and wf[key] != (hf.get(key) or ([] if key == "order" else None)):
            changed.append(f"files.{key}")
    return changed


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def compare_versions(local: str, online: str | None) -> int | None:
    """-1, 0 or 1 as semver orders them; None when either is not a semantic version."""
    if local == online:
        return 0
    a, b = _SEMVER.match(local or ""), _SEMVER.match(online or "")
    if not (a and b):
        return None

    def order(m):
        pre = m.group(4)
        # a release sorts after its pre-releases; numeric identifiers sort before others
        ids = tuple((0, int(x), "") if x.isdigit() else (1, 0, x)
                    for x in pre.split(".")) if pre else ()
        return tuple(int(m.group(i)) for i in (1, 2, 3)), (not pre, ids)

    ka, kb = order(a), order(b)
    return (ka > kb) - (ka < kb)


@dataclass
class FilePlan:
    """What to do with a draft's files so that they become ``members``."""

    delete: list[str] = field(default_factory=list)  # online, no longer listed
    replace: list[Member] = field(default_factory=list)  # online with another MD5
    add: list[Member] = field(default_factory=list)  # not online yet
    complete: list[Member] = field(default_factory=list)  # announced, never committed
    same: list[Member] = field(default_factory=list)

    @property
    def send(self) -> list[Member]:
        return self.replace + self.add + self.complete

    @property
    def changes(self) -> bool:
        return bool(self.delete or self.send)


def plan_files(members: list[Member], online: dict[str, Entry]) -> FilePlan:
    plan = FilePlan()
    wanted = {m.key for m in members}
    plan.delete = [k for k in online if k not in wanted]
    for m in members:
        entry = online.get(m.key)
        if entry is None:
            plan.add.append(m)
        elif entry.md5 is None:
            plan.complete.append(m)
        elif entry.md5 != m.md5:
            plan.replace.append(m)
        else:
            plan.same.append(m)
    return plan


def needs_content(members: list[Member], online: dict[str, Entry]) -> list[Member]:
    """Members whose bytes must be here: MD5 unknown, or to be sent."""
    return [m for m in members
            if m.md5 is None or (online.get(m.key) or Entry(m.key, None, None)).md5 != m.md5]


# == 3 and 4. the run: act, then remember ==================================================
@dataclass
class Settings:
    dry_run: bool = False
    publish: bool = False
    max_files: int = MAX_FILES
    max_bytes: int = MAX_BYTES
    data_relation: str | None = "issupplementedby"
    backoff: Backoff | None = None


class Sync:
    """One run: the config, its members, a client (None: validate only), and the results."""

    def __init__(self, ds, config: SyncConfig, client: Zenodo | None, settings: Settings):
        self.ds, self.config, self.client, self.settings = ds, config, client, settings
        self.record_path = Path(ds.path) / RECORD_FILE
        self.name = config.path.relative_to(ds.path).as_posix()
        self.state = _read_json(self.record_path).get(self.name) or {}
        if self.state.get("endpoint") not in (None, config.endpoint):
            self.state = {}  # a record id means something on its own server only
        self.members: list[Member] = []
        self.sent_bytes = 0
        self.notes: list[str] = []
        self.record: dict | None = None  # the draft or record as last seen
        self.rid: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- helpers -------------------------------------------------------------------------
    def result(self, status: str, message, path=None, **kw) -> dict:
        return get_status_dict(action=ACTION, ds=self.ds, status=status, message=message,
                               path=str(path or self.config.path), type="file",
                               dry_run=self.settings.dry_run, **kw)

    def body(self, publication_date: str | None, with_files=True) -> dict:
        metadata = dict(self.config.metadata)
        metadata["publication_date"] = publication_date or dt.date.today().isoformat()
        doi = _data_doi(self.ds)
        relation = self.settings.data_relation
        if doi and relation:
            related = list(metadata.get("related_identifiers") or [])
            if not any(r.get("identifier", "").lower() == doi.lower() for r in related):
                related.append({"scheme": "doi", "identifier": doi,
                                "relation_type": {"id": relation},
                                "resource_type": {"id": "dataset"}})
            metadata["related_identifiers"] = related
        files = {"enabled": bool(self.members)}
        if with_files and self.members:
            files.update(order=[m.key for m in self.members],
                         default_preview=self.members[0].key)
        return {"access": self.config.access, "metadata": metadata,
                "custom_fields": self.config.custom_fields, "files": files}

    def read_record_id(self) -> str | None:
        path = self.config.path_record_id
        if not path.exists():
            return None
        rid = path.read_text().strip()
        if not rid:
            raise SyncError(f"{_show(path, self.ds)} is empty; remove it to create a new "
                            "record, or put the record id in it")
        return rid

    def write_record_id(self, rid: str) -> None:
        self.rid = rid
        if self.settings.dry_run:
            return
        path = self.config.path_record_id
        if not path.exists() or path.read_text().strip() != rid:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{rid}\n")

    # -- the run -------------------------------------------------------------------------
    def run(self) -> Iterator[dict]:
        s = self.settings
        self.members = plan_members(self.ds, self.config, self.state.get("files") or {},
                                    s.max_files, s.max_bytes)
        if self.client is None:
            yield self._validate_only()
            return
        try:
            rid = self.read_record_id()
            if rid is None:
                yield from self._first_run()
            else:
                draft = self.client.draft(rid)
                if draft is not None and not draft.get("is_published"):
                    yield from self._refresh_draft(rid, draft)
                else:
                    yield from self._published(rid, draft)
        except (SyncError, ZenodoError, ConfigError):
            # A draft made before the failure exists on Zenodo: remember it all the same.
            yield from self._remember()
            raise
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
        yield from self._remember()

    def _validate_only(self) -> dict:
        total = sum(m.size or 0 for m in self.members)
        message = (f"{self.name} is valid: {len(self.members)} file(s), {_size(total)}, for "
                   f"{self.config.endpoint}; no token (credential for that realm, "
                   "path_token file, REPREP_ZENODO_TOKEN), so nothing was sent")
        return self.result("ok", message, zenodo_files=[m.key for m in self.members],
                           zenodo_body=self.body(None))

    def _first_run(self) -> Iterator[dict]:
        if self.settings.dry_run:
            self._materialize(self.members)
            yield from self._describe_files(FilePlan(add=list(self.members)))
            yield self.result("ok", f"would create a draft for version {self.config.version}"
                              f" on {self.config.endpoint}" +
                              (" and publish it" if self.settings.publish else ""),
                              zenodo_body=self.body(None))
            return
        self._materialize(self.members)
        body = self.body(None, with_files=False)
        draft = self.client.create_draft(body)
        rid = str(draft["id"])
        self.write_record_id(rid)
        yield from self._sync_files(rid, {})
        yield from self._sync_metadata(rid, draft, body["metadata"]["publication_date"])
        if self.settings.publish:
            yield from self._publish(rid)
        yield self._summary("created")

    def _refresh_draft(self, rid: str, draft: dict) -> Iterator[dict]:
        online = file_entries(draft)
        self.rid, self.record = rid, draft
        index = (draft.get("versions") or {}).get("index", 1)
        if not online and index > 1:
            # A new version whose files were never imported (an interrupted run).
            concept = (draft.get("parent") or {}).get("id") or rid
            previous = self.client.record(self.client.latest_id(concept))
            online = yield from self._import(rid, previous)
        self._materialize(needs_content(self.members, online))
        if self.settings.dry_run:
            yield from self._describe_files(plan_files(self.members, online))
            yield from self._describe_metadata(draft, self._date(draft))
            return
        changed = yield from self._sync_files(rid, online)
        if changed:  # deleting a file also takes it out of files.order
            draft = self.client.draft(rid) or draft
        yield from self._sync_metadata(rid, draft, self._date(draft))
        if self.settings.publish:
            yield from self._publish(rid)
        yield self._summary("updated")

    def _published(self, rid: str, edit_draft: dict | None) -> Iterator[dict]:
        try:
            record = self.client.record(rid)
        except ZenodoError as exc:
            if exc.status != 404:
                raise
            raise SyncError(f"record {rid} (from {_show(self.config.path_record_id, self.ds)})"
                            f" is neither a draft nor a published record on "
                            f"{self.config.endpoint}; if its draft was discarded, remove that "
                            "file to create a new record") from None
        latest = self.client.latest_id(rid)
        if latest != rid:
            other = self.client.record(latest)
            if version_of(other) != self.config.version:
                raise SyncError(
                    f"record {rid} (version {version_of(record)}) is not the latest version "
                    f"on Zenodo; {latest} (version {version_of(other)}) is. Update "
                    f"{_show(self.config.path_record_id, self.ds)} and metadata.version "
                    "(e.g. pull your collaborators' work)")
            self.notes.append(f"followed to the latest version {latest}")
            rid, record, edit_draft = latest, other, self.client.draft(latest)
            self.write_record_id(rid)
        self.rid, self.record = rid, record
        order = compare_versions(self.config.version, version_of(record))
        if order == 0:
            yield from self._same_version(rid, record, edit_draft)
        elif order is None or order > 0:
            yield from self._new_version(rid, record)
        else:
            raise SyncError(f"metadata.version {self.config.version} is older than the "
                            f"published version {version_of(record)} of record {rid}")

    def _same_version(self, rid: str, record: dict, edit_draft: dict | None) -> Iterator[dict]:
        online = file_entries(record)
        self._materialize([m for m in self.members if m.md5 is None])
        plan = plan_files(self.members, online)
        if plan.changes:
            what = [f"{m.key} changed" for m in plan.replace] + \
                   [f"{m.key} new" for m in plan.add] + \
                   [f"{k} no longer listed" for k in plan.delete]
            raise SyncError(f"version {self.config.version} is published (record {rid}) and "
                            f"its files cannot change: {', '.join(what)}. Raise "
                            "metadata.version to send them as a new version")
        for m in plan.same:
            yield self._file_result(m, "notneeded", "unchanged (published)")
        date = self._date(record)
        want = self.body(date)
        changed = metadata_changes(want, record)
        if changed and not self.settings.publish:
            yield self.result("notneeded",
                              f"the published metadata of {rid} differs from {self.name} "
                              f"({', '.join(changed)}); run with --publish to edit and "
                              "republish it", record_id=rid, changed=changed)
        elif changed and self.settings.dry_run:
            yield self.result("ok", f"would edit record {rid} ({', '.join(changed)}) and "
                                    "republish it", record_id=rid, changed=changed)
        elif changed:
            draft = edit_draft if edit_draft is not None else self.client.edit(rid)
            if metadata_changes(want, draft):
                self._check_saved(self.client.update_draft(rid, want))
            self.record = self.client.publish(rid)
            yield self.result("ok", f"republished record {rid} with new metadata "
                                    f"({', '.join(changed)})", record_id=rid)
        if not self.settings.dry_run and rid not in (self.state.get("urls_registered") or []):
            yield from self._register_urls(rid, self.record)
        yield self._summary("published")

    def _new_version(self, rid: str, record: dict) -> Iterator[dict]:
        if self.settings.dry_run:
            online = file_entries(record)
            self._materialize(needs_content(self.members, online))
            plan = plan_files(self.members, online)
            yield self.result("ok", f"would create version {self.config.version} as a new "
                              f"version of record {rid} (version {version_of(record)}), "
                              f"importing {len(plan.same)} unchanged file(s)")
            yield from self._describe_files(plan)
            return
        draft = self.client.new_version(rid)
        new = str(draft["id"])
        self.write_record_id(new)
        self.rid, self.record = new, draft
        online = file_entries(draft)
        if not online:
            online = yield from self._import(new, record)
        yield self.result("ok", f"new version {self.config.version}: draft {new} (after "
                                f"{version_of(record)}, record {rid})", record_id=new)
        yield from self._sync_files(new, online)
        # the new version's draft has no version and no date: its metadata differs anyway
        yield from self._sync_metadata(new, draft, self._date(draft))
        if self.settings.publish:
            yield from self._publish(new)
        yield self._summary("new version")

    def _import(self, rid: str, previous: dict):
        """Copy the previous version's files if any are still wanted (no bytes move)."""
        before = file_entries(previous)
        self._materialize([m for m in self.members if m.md5 is None and m.key in before])
        keep = [m for m in self.members if before.get(m.key) and before[m.key].md5 == m.md5]
        if not keep:
            return {}
        if self.settings.dry_run:
            yield self.result("ok", f"would import the {len(before)} file(s) of the "
                                    f"previous version into {rid}", record_id=rid)
            return before
        self.client.import_files(rid)
        yield self.result("ok", f"imported {len(before)} file(s) of the previous version "
                                f"into {rid} (no upload)", record_id=rid)
        return before

    # -- files -------------------------------------------------------------------------
    def _materialize(self, members: list[Member]) -> None:
        """Bring the bytes of ``members`` here: fetch annexed content, build ZIPs, and
        compute MD5s. Then check the limits again (a ZIP's size is known only now)."""
        if not members:
            return
        wanted = [f for m in members for f in (m.files if m.is_zip else [m.files[0]])
                  if not _readable(f)]
        if wanted and self.settings.dry_run:
            for m in members:  # a dry run reports, it does not fetch
                if any(not _readable(f) for f in m.files):
                    self.notes.append(f"{m.key}: content not here, would be fetched")
            members = [m for m in members if all(_readable(f) for f in m.files)]
        elif wanted:
            failed = [r for r in self.ds.get(path=[str(f) for f in wanted],
                                             result_renderer="disabled",
                                             on_failure="ignore", return_type="list")
                      if r.get("status") in ("error", "impossible")]
            if failed:
                raise SyncError("cannot fetch the content to send: " + "; ".join(
                    f"{_show(Path(r['path']), self.ds)}: {r.get('message')}" for r in failed))
        for m in members:
            if m.is_zip:
                if m.local is None:
                    if self._tmp is None:
                        self._tmp = tempfile.TemporaryDirectory(prefix="zenodo-sync-")
                    build_zip(m, Path(self._tmp.name) / m.key)
            else:
                m.local = m.files[0]
                if m.md5 is None:
                    m.md5 = _md5_of(m.local)
                m.size = m.local.stat().st_size
        check_limits(self.members, self.ds, self.settings.max_bytes)

    def _sync_files(self, rid: str, online: dict[str, Entry]) -> Iterator[dict]:
        self._materialize([m for m in needs_content(self.members, online)
                           if m.local is None])
        plan = plan_files(self.members, online)
        for key in plan.delete:
            self.client.delete_file(rid, key)
            yield self.result("ok", f"deleted {key} from draft {rid} (no longer listed)",
                              zenodo_key=key, record_id=rid)
        for m in plan.replace:
            self.client.delete_file(rid, m.key)
        self.client.init_files(rid, [m.key for m in plan.replace + plan.add])
        for m in plan.send:
            yield self._upload(rid, m, "replaced" if m in plan.replace else "uploaded")
        for m in plan.same:
            yield self._file_result(m, "notneeded", f"unchanged in draft {rid}")
        return plan.changes

    def _upload(self, rid: str, m: Member, verb: str) -> dict:
        pid = f"zenodo-upload-{rid}-{m.key}"
        quiet = dict(noninteractive_level=logging.DEBUG)  # results say it when no bar shows
        log_progress(lgr.info, pid, "Uploading %s", m.key, label=f"Uploading {m.key}",
                     total=m.size, unit=" Bytes", **quiet)
        try:
            committed, sent_md5 = self.client.upload(
                rid, m.key, str(m.local), m.size,
                progress=lambda n: log_progress(lgr.info, pid, "Uploading %s", m.key,
                                                update=n, increment=False, **quiet))
        finally:
            log_progress(lgr.info, pid, "Uploaded %s", m.key, **quiet)
        checksum = f"md5:{m.md5}"
        if committed.get("size") != m.size or committed.get("checksum") != checksum or \
                sent_md5 != m.md5:
            raise SyncError(f"{m.key}: Zenodo holds {committed.get('size')} bytes with "
                            f"{committed.get('checksum')}, the local file is {m.size} bytes "
                            f"with {checksum}; the file changed while it was sent, or the "
                            "transfer was corrupted. Run again")
        self.sent_bytes += m.size
        return self._file_result(m, "ok", f"{verb} in draft {rid} ({_size(m.size)}, "
                                          f"{checksum})", bytes=m.size)

    def _file_result(self, m: Member, status: str, message: str, **kw) -> dict:
        return self.result(status, f"{m.key}: {message}", path=m.path, zenodo_key=m.key,
                           md5=m.md5, **kw)

    def _describe_files(self, plan: FilePlan) -> Iterator[dict]:
        for key in plan.delete:
            yield self.result("ok", f"would delete {key} (no longer listed)", zenodo_key=key)
        for m in plan.send:
            verb = "replace" if m in plan.replace else "upload"
            yield self._file_result(m, "ok", f"would {verb} ({_size(m.size)})")
        for m in plan.same:
            yield self._file_result(m, "notneeded", "unchanged")
        for note in self.notes:
            yield self.result("ok", note)
        self.notes = []

    # -- metadata, publishing, URLs -----------------------------------------------------------
    @staticmethod
    def _date(record: dict) -> str | None:
        return (record.get("metadata") or {}).get("publication_date")

    def _sync_metadata(self, rid: str, draft: dict, date: str | None) -> Iterator[dict]:
        want = self.body(date)
        changed = metadata_changes(want, draft or {})
        if not changed:
            yield self.result("notneeded", f"metadata of draft {rid} unchanged",
                              record_id=rid)
            return
        saved = self.client.update_draft(rid, want)
        self.record = saved
        yield self.result("ok", f"metadata of draft {rid} updated ({', '.join(changed)})"
                          + self._check_saved(saved), record_id=rid, changed=changed)

    def _check_saved(self, saved: dict) -> str:
        """Zenodo saves a draft with what is valid and lists the rest: say so."""
        errors = saved.get("errors") or []
        if not errors:
            return ""
        listed = "; ".join(f"{e.get('field')}: {' '.join(e.get('messages') or [])}"
                           for e in errors)
        if self.settings.publish:
            raise SyncError(f"Zenodo did not accept the metadata: {listed}")
        return f"; Zenodo reports (publishing will fail until fixed): {listed}"

    def _describe_metadata(self, draft: dict, date: str | None) -> Iterator[dict]:
        changed = metadata_changes(self.body(date), draft)
        yield self.result("ok" if changed else "notneeded",
                          f"would update metadata ({', '.join(changed)})" if changed
                          else "metadata unchanged", changed=changed)
        if self.settings.publish:
            yield self.result("ok", f"would publish draft {self.rid}")

    def _publish(self, rid: str) -> Iterator[dict]:
        record = self.client.publish(rid)
        self.record = record
        doi, concept = dois(record)
        yield self.result("ok", f"published version {self.config.version}: record {rid}, "
                                f"DOI {doi} (all versions: {concept})", record_id=rid,
                          doi=doi, concept_doi=concept)
        yield from self._register_urls(rid, record)

    def _register_urls(self, rid: str, record: dict) -> Iterator[dict]:
        """Tell git-annex where Zenodo serves each annexed file sent as itself (web remote),
        so that clones can ``datalad get`` it from there."""
        entries = file_entries(record)
        by_repo: dict[Path, list[tuple[str, str]]] = {}
        for m in self.members:
            entry = entries.get(m.key)
            if m.annex_key is None or entry is None or entry.md5 != m.md5:
                continue
            url = entry.content_url or self.client.content_url(rid, m.key)
            by_repo.setdefault(m.repo, []).append((m.annex_key, url))
        for repo, pairs in by_repo.items():
            proc = subprocess.run(
                ["git", "-C", str(repo), "annex", "registerurl", "--batch"],
                input="".join(f"{k} {u}\n" for k, u in pairs), capture_output=True,
                text=True)
            if proc.returncode != 0:
                yield self.result("error", f"git annex registerurl failed in {repo}: "
                                           f"{proc.stderr.strip()[:300]}")
                continue
            yield self.result("ok", f"registered the Zenodo URLs of {len(pairs)} annexed "
                                    f"file(s) of record {rid}", record_id=rid)
        self.state.setdefault("urls_registered", [])
        if rid not in self.state["urls_registered"]:
            self.state["urls_registered"].append(rid)

    # -- remember ------------------------------------------------------------------------------
    def _summary(self, what: str) -> dict:
        record = self.record or {}
        doi, concept = dois(record)
        published = bool(record.get("is_published"))
        sent = f"{_size(self.sent_bytes)} sent"
        message = (f"{what}: record {self.rid} (version {self.config.version}, "
                   f"{'published' if published else 'draft'}), {sent}")
        if self.notes:
            message += "; " + "; ".join(self.notes)
        return self.result("ok", message, record_id=self.rid,
                           concept_id=(record.get("parent") or {}).get("id"),
                           doi=doi, concept_doi=concept, bytes_sent=self.sent_bytes,
                           url=(record.get("links") or {}).get("self_html"))

    def _remember(self) -> Iterator[dict]:
        if self.settings.dry_run or self.rid is None:
            return
        record = self.record or {}
        doi, concept = dois(record)
        published = bool(record.get("is_published"))
        state = dict(self.state)
        state.update(endpoint=self.config.endpoint, record_id=self.rid,
                     concept_id=(record.get("parent") or {}).get("id") or
                     state.get("concept_id"),
                     version=self.config.version, state="published" if published else "draft",
                     url=(record.get("links") or {}).get("self_html"))
        state["concept_doi"] = concept or state.get("concept_doi")
        versions = {v["record_id"]: v for v in state.get("versions") or []}
        versions[self.rid] = {"record_id": self.rid, "version": self.config.version,
                              "doi": doi, "state": state["state"]}
        state["versions"] = sorted(versions.values(), key=lambda v: int(v["record_id"])
                                   if v["record_id"].isdigit() else 0)
        state["doi"] = doi
        state["files"] = {m.key: _drop_empty(
            md5=m.md5, size=m.size, path=_show(m.path, self.ds), annex_key=m.annex_key,
            zip_of=_show(m.source, self.ds) if m.is_zip else None,
            fingerprint=m.fingerprint) for m in self.members}
        everything = _read_json(self.record_path)
        everything[self.name] = state
        text = json.dumps(everything, indent=1, sort_keys=True) + "\n"
        changed = []
        if not self.record_path.exists() or self.record_path.read_text() != text:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            self.record_path.write_text(text)
            changed.append(self.record_path)
        rid_file = self.config.path_record_id
        root = Path(self.ds.path)
        if root in rid_file.parents:
            changed.append(rid_file)
        results = self.ds.save(path=[str(p) for p in changed], to_git=True,
                               message=f"[DATALAD RDR] zenodo-sync: record {self.rid} "
                                       f"(version {self.config.version}, {state['state']})",
                               result_renderer="disabled", on_failure="ignore",
                               return_type="list")
        for r in results:
            if r.get("status") in ("error", "impossible"):
                yield self.result("error", f"datalad save failed: {r.get('message')}",
                                  path=r.get("path"))


def _readable(path: Path) -> bool:
    """The file's bytes are here (an absent annexed file is a dangling symlink or a pointer)."""
    if not path.exists():
        return False
    if path.is_symlink() or path.stat().st_size > 1024:
        return True
    with open(path, "rb") as fh:
        return not fh.read(1024).startswith(b"/annex/objects/")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _data_doi(ds) -> str | None:
    """The DOI of the dataset's data on RDR, when ``rdr-export`` recorded one."""
    doi = _read_json(Path(ds.path) / MANIFEST_FILE).get("doi")
    return doi if isinstance(doi, str) and doi else None


# == the token ================================================================================
@dataclass
class Token:
    secret: str
    source: str  # for messages; never the secret
    credential: str | None = None  # the credential manager's name, if it came from there
    props: dict | None = None


def find_token(ds, config: SyncConfig, credential: str | None = None) -> Token | None:
    """The Zenodo token: the credential manager (``--credential NAME``, or the last used
    credential whose realm is the endpoint URL, or one named ``zenodo`` without another
    realm), then StepUp's token file (``path_token``, ``REPREP_PATH_ZENODO_TOKEN``), then
    ``REPREP_ZENODO_TOKEN``. None: validate only."""
    from datalad_next.credman import CredentialManager

    credman = CredentialManager(ds.config)
    if credential:
        cred = credman.get(credential, _prompt=None)
        if not cred or not cred.get("secret"):
            raise SyncError(f"no credential {credential!r} (set it with 'datalad credentials "
                            f"set {credential} secret=<token> realm={config.endpoint}', or "
                            f"DATALAD_CREDENTIAL_{credential.upper()}_SECRET)")
        return Token(cred["secret"], f"credential {credential}", credential, cred)
    found = credman.query(_sortby="last-used", realm=config.endpoint)
    if found:
        name, cred = found[0]
        if cred.get("secret"):
            return Token(cred["secret"], f"credential {name}", name, cred)
    cred = credman.get("zenodo", _prompt=None)
    if cred and cred.get("secret") and cred.get("realm") in (None, config.endpoint):
        return Token(cred["secret"], "credential zenodo", "zenodo", cred)
    token_file = os.environ.get("REPREP_PATH_ZENODO_TOKEN") or config.path_token
    if token_file:
        path = Path(os.path.expanduser(str(token_file)))
        if not path.is_absolute():
            path = config.base / path
        if path.is_file():
            secret = path.read_text().strip()
            if secret:
                return Token(secret, f"token file {path}")
    secret = os.environ.get("REPREP_ZENODO_TOKEN", "").strip()
    if secret:
        return Token(secret, "REPREP_ZENODO_TOKEN")
    return None


def mark_used(ds, token: Token) -> None:
    """Record a stored credential as last used; one defined by environment variables (or
    a token file) is not written anywhere."""
    if token.credential is None:
        return
    env = f"DATALAD_CREDENTIAL_{token.credential.upper().replace('-', '_')}_SECRET"
    if env in os.environ:
        return
    from datalad_next.credman import CredentialManager

    try:
        CredentialManager(ds.config).set(token.credential, _lastused=True,
                                         **(token.props or {}))
    except Exception as exc:  # noqa: BLE001 - remembering is a convenience only
        lgr.debug("could not mark credential %s as used: %s", token.credential,
                  type(exc).__name__)


def _config_int(ds, name: str, default: int) -> int:
    value = ds.config.get(f"datalad.rdr.zenodo.{name}")
    try:
        return int(value) if value is not None else default
    except ValueError:
        raise ConfigError([f"datalad.rdr.zenodo.{name} = {value!r}: not a number"],
                          "git config") from None


def settings_from(ds, dry_run: bool, publish: bool) -> Settings:
    relation = ds.config.get("datalad.rdr.zenodo.data-relation", "issupplementedby")
    if relation and relation.lower() in ("none", "no", "off", ""):
        relation = None
    elif relation and relation not in RELATION_TYPES:
        raise ConfigError([f"datalad.rdr.zenodo.data-relation = {relation!r}: not a "
                           "relation type"], "git config")
    return Settings(dry_run=dry_run, publish=publish,
                    max_files=_config_int(ds, "max-files", MAX_FILES),
                    max_bytes=_config_int(ds, "max-bytes", MAX_BYTES),
                    data_relation=relation)


def sync(ds, config_path: Path | None, paths=(), *, description: Path | None = None,
         dry_run: bool = False, publish: bool = False,
         credential: str | None = None) -> Iterator[dict]:
    """Bring the Zenodo record of ``ds``'s zenodo.yaml up to date; yield result records."""
    where = str(config_path or ds.path)
    try:
        config_path = Path(config_path) if config_path else find_config(Path(ds.path))
        where = str(config_path.absolute())
        if Path(ds.path) not in config_path.absolute().parents:
            raise ConfigError([f"{config_path} is not inside the dataset {ds.path}"],
                              "zenodo-sync")
        config = load_config(config_path, paths, description)
        settings = settings_from(ds, dry_run, publish)
        token = find_token(ds, config, credential)
        client = None
        if token is not None:
            client = Zenodo(config.endpoint, token.secret, backoff=settings.backoff)
        yield from Sync(ds, config, client, settings).run()
        if token is not None and not dry_run:
            mark_used(ds, token)
    except ConfigError as exc:
        yield get_status_dict(action=ACTION, ds=ds, path=where, type="file",
                              status="impossible", message=str(exc),
                              problems=exc.problems)
    except (SyncError, ZenodoError) as exc:
        yield get_status_dict(action=ACTION, ds=ds, path=where, type="file",
                              status="error", message=str(exc))
