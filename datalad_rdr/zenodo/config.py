"""StepUp RepRep's zenodo.yaml, read and checked into the RDM JSON StepUp would send.

Both forms are read unchanged: 3.1's (``path_token``, ``paths``, ``path_readme``,
``code_repository``) and 4.x's (``custom_fields``; paths and ``--description`` on the command
line). Additions: ``paths`` may hold folders and globs, and ``{zip: <folder or glob>, name:
<name>.zip}`` sends a folder as one deterministic ZIP. Every problem is collected with where
it is (``metadata.creators[0].identifiers.orcid: ...``), so that one run lists them all.
ORCID, ISNI, DOI, ROR and URL are judged by :mod:`datalad_rdr.identifiers`, as in RDR's
metadata.yaml.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..identifiers import doi, isni_ok, orcid, ror_ok, url_ok

DEFAULT_ENDPOINT = "https://sandbox.zenodo.org/api"  # StepUp's default: never production
CONFIG_NAMES = ("zenodo.yaml", "sync_zenodo.yaml", "zenodo.yml", "sync_zenodo.yml")
URL_SCHEMES = ("http", "https", "ftp", "ftps")  # what Zenodo takes as a "url" identifier


class ConfigError(Exception):
    """zenodo.yaml (or the paths) cannot be used; ``problems`` says where and why."""

    def __init__(self, problems: list[str], source: str = "zenodo.yaml"):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


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



def drop_empty(**values) -> dict:
    """A JSON object without the unset keys (as StepUp builds them, so both send the same)."""
    return {k: v for k, v in values.items() if v is not None and v != [] and v != {}}


class _ZenodoYamlReader:
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
            if not ror_ok(ror):
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
            # Zenodo wants the bare ORCID iD; https://orcid.org/... is taken and shortened
            bare = orcid(value) if scheme == "orcid" else \
                (value if isinstance(value, str) and isni_ok(value) else None)
            if bare is None:
                self.bad(f"{where}.identifiers.{scheme}",
                         f"not a valid {scheme.upper()}: {value!r} (e.g. "
                         "'0000-0002-1825-0097')")
            else:
                identifiers.append({"scheme": scheme, "identifier": bare})
        affiliations = [self.organization(a, f"{where}.affiliations[{i}]")
                        for i, a in enumerate(self.items(c, "affiliations", f"{where}."))]
        person = drop_empty(type="personal", family_name=family, given_name=given,
                             identifiers=identifiers)
        return drop_empty(person_or_org=person,
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
        identifier = self._check_identifier(scheme, identifier, where)
        return drop_empty(scheme=scheme, identifier=identifier)

    def _check_identifier(self, scheme, identifier: str, where: str) -> str:
        """The identifier as Zenodo stores it: a DOI without https://doi.org/ or doi:."""
        if scheme == "doi":
            bare = doi(identifier)
            if bare is None:
                self.bad(f"{where}.identifier",
                         f"not a DOI: {identifier!r} (e.g. 10.5281/zenodo.1)")
            return bare or identifier
        if scheme == "url" and not url_ok(identifier, URL_SCHEMES):
            self.bad(f"{where}.identifier", f"not an http(s) or ftp(s) URL: {identifier!r}")
        return identifier

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
        identifier = self._check_identifier(scheme, identifier, where)
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
        award = drop_empty(id=award_id, title=None if title is None else {"en": title},
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
        return drop_empty(
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
            if url_ok(url, URL_SCHEMES):
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
            nested = drop_empty(**values)
            if nested:
                out[CUSTOM_FIELDS[name]] = nested
        return out

    def access(self, value, today: dt.date | None = None) -> dict:
        a = self.mapping(value, "access", {"record", "files", "embargo"})
        out = {}
        for level in ("record", "files"):
            v = a.get(level, "public")
            if v not in ("public", "restricted"):
                self.bad(f"access.{level}", "public or restricted")
                v = "public"
            out[level] = v
        if a.get("embargo") is not None:
            embargo = self.embargo(a["embargo"], today or dt.date.today())
            given = a["embargo"]
            active = isinstance(given, dict) and given.get("active", True) is True
            if active and out["files"] != "restricted":
                # an embargo keeps restricted files from the public until a date; with
                # public files it would hide nothing
                self.bad("access.files", "an active embargo needs files: restricted")
            if embargo:
                out["embargo"] = embargo
        return out

    def embargo(self, value, today: dt.date) -> dict | None:
        """Zenodo's ``access.embargo``. ``until`` must lie ahead (Zenodo would save the draft,
        list the error and refuse to publish it) and the reason is what visitors read on the
        record's page, so both are checked here, before anything is sent."""
        e = self.mapping(value, "access.embargo", {"active", "until", "reason"})
        active = e.get("active", True)
        if not isinstance(active, bool):
            self.bad("access.embargo.active", "true or false")
            return None
        until = e.get("until")
        if isinstance(until, dt.datetime):
            until = until.date()
        if isinstance(until, str):
            try:
                until = dt.date.fromisoformat(until)
            except ValueError:
                self.bad("access.embargo.until", f"not a date: {until!r} (YYYY-MM-DD)")
                return None
        if until is not None and not isinstance(until, dt.date):
            self.bad("access.embargo.until", f"not a date: {until!r} (YYYY-MM-DD)")
            return None
        reason = self.string(e, "reason", "access.embargo.")
        if not active:
            return {"active": False}
        if until is None:
            self.bad("access.embargo.until", "required: the day the files become public")
        elif until <= today:
            self.bad("access.embargo.until", f"{until.isoformat()} is not in the future "
                                             "(once it has passed, Zenodo has lifted the "
                                             "embargo: remove the embargo block)")
        if reason is None:
            self.bad("access.embargo.reason", "required: why the files are embargoed "
                                              "(shown on the record's page)")
        if until is None or until <= today or reason is None:
            return None
        return {"active": True, "until": until.isoformat(), "reason": reason}


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
    r = _ZenodoYamlReader()
    r.mapping(data, "", TOP_KEYS)
    record_id = r.string(data, "path_record_id", "", required=True)
    endpoint = (r.string(data, "endpoint", "") or DEFAULT_ENDPOINT).rstrip("/")
    if not url_ok(endpoint):
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


