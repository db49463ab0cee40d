"""The metadata file ``.datalad/rdr/metadata.yaml``: read, check, and the record it describes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import identifiers
from .problems import METADATA, MetadataError, Problems
from .readme import first_paragraphs
from .tree import NotHere, Snapshot

TEMPLATE_HINT = "run 'datalad rdr-export --metadata-template' for a commented template"

# What a user may write for the license, and the name Dataverse knows it by (the names of the
# licenses a stock Dataverse installs; GET /api/licenses on the server lists them).
LICENSES = {
    "cc-by-4.0": "CC-BY-4.0", "cc by 4.0": "CC-BY-4.0", "cc-by": "CC-BY-4.0",
    "cc0-1.0": "CC0-1.0", "cc0 1.0": "CC0-1.0", "cc0": "CC0-1.0",
    "custom": "custom",
}
DATAVERSE_LICENSE = {"CC-BY-4.0": "CC BY 4.0", "CC0-1.0": "CC0 1.0"}
LICENSE_URI = {"CC-BY-4.0": "http://creativecommons.org/licenses/by/4.0",
               "CC0-1.0": "http://creativecommons.org/publicdomain/zero/1.0"}
ACCESS = ("restricted", "open", "embargoed")
AFTER_EMBARGO = ("open", "restricted")


@dataclass
class Person:
    name: str
    affiliation: str | None = None
    orcid: str | None = None
    email: str | None = None


@dataclass
class Grant:
    agency: str
    number: str | None = None


@dataclass
class DatasetMetadata:
    title: str
    authors: list[Person]
    contact: Person
    description: str
    subject: list[str] = field(default_factory=list)  # required where the server says
    keywords: list[str] = field(default_factory=list)
    related_publication: str | None = None  # DOI of the paper
    code_repository: str | None = None  # URL
    code_doi: str | None = None  # Zenodo concept DOI of the code
    funding: list[str] = field(default_factory=list)
    license: str = "CC-BY-4.0"  # "CC-BY-4.0", "CC0-1.0" or "custom"
    terms_of_use: str | None = None  # the custom terms when license == "custom"
    access: str = "restricted"  # "restricted" (bundles restricted) or "open"
    opt_out_reason: str | None = None  # legitimate reason for restricted access
    # access: embargoed -- closed until the date, then open or restricted (the export's use of
    # it comes later: for now the bundles are restricted as for restricted access)
    embargo_until: dt.date | None = None
    embargo_reason: str | None = None
    after_embargo: str | None = None  # "open" or "restricted"
    documentation: list[str] = field(default_factory=list)  # dataset paths sent public,
    # as separate files, besides the README (which is always sent)
    history: str = "public"  # the deposited git history: "public" or "restricted"
    grants: list[Grant] = field(default_factory=list)  # funding, structured (agency, number)
    department: list[str] = field(default_factory=list)  # RDR's Department / Faculty
    # openMINDS terms EBRAINS curation requires: data_types, techniques,
    # experimental_approaches, ethics_assessment -> [term names]
    ebrains: dict[str, list[str]] = field(default_factory=dict)
    description_from_readme: bool = False  # True when description was taken from the README
    lines: dict[str, int] = field(default_factory=dict, repr=False)  # entry -> YAML line


def load(dataset: Path, commit: str = "HEAD",
         max_embargo_months: int | None = None) -> DatasetMetadata | None:
    """The dataset's metadata as `commit` has it (the README for the description too), or
    None when neither the commit nor the work tree has a metadata file.

    Raises MetadataError listing every problem (field, YAML line, fix) when the file is
    there but incomplete or invalid, or is in the work tree only. An embargo may end at
    most `max_embargo_months` from today (the server's maximum, when the caller knows it).
    """
    dataset = Path(dataset)
    snapshot = Snapshot(dataset, commit)
    if snapshot.resolve() is None:
        raise MetadataError(f"{METADATA}: the dataset has no commit {commit!r} to read it "
                            f"from; 'datalad save' first (or name an existing commit)")
    try:
        data = snapshot.read(METADATA)
    except NotHere as exc:
        raise MetadataError(str(exc), field="file") from exc
    if data is None:
        if (dataset / METADATA).exists():
            raise MetadataError(
                f"{METADATA} is in the work tree but not in commit {commit}, the one "
                f"exported; 'datalad save' it and export again", field="file")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{METADATA}: cannot be read ({exc}); save it as UTF-8") from exc
    return _parse(text, snapshot, max_embargo_months)


def parse(text: str, dataset: Path | None = None,
          max_embargo_months: int | None = None) -> DatasetMetadata:
    """Check the YAML text of a metadata file; `dataset` (a directory) supplies the README
    and the documentation paths."""
    return _parse(text, Snapshot(dataset), max_embargo_months)


def _parse(text: str, files: Snapshot, max_embargo_months: int | None) -> DatasetMetadata:
    try:
        data = yaml.safe_load(text)
        lines = _lines(yaml.compose(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise MetadataError(f"{METADATA}: not valid YAML{line}: "
                            f"{getattr(exc, 'problem', None) or exc}; fix the syntax") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MetadataError(f"{METADATA}: expected 'field: value' lines, found "
                            f"{type(data).__name__}; {TEMPLATE_HINT}")
    return _Reader(data, files, lines, max_embargo_months).read()


def _lines(node, path: str = "", out: dict | None = None) -> dict[str, int]:
    """{entry name as the messages write it ("authors[0].orcid"): 1-based YAML line}."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = f"{path}.{key.value}" if path else str(key.value)
            out[name] = key.start_mark.line + 1
            _lines(value, name, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[f"{path}[{i}]"] = item.start_mark.line + 1
            _lines(item, f"{path}[{i}]", out)
    return out


# -- checking ------------------------------------------------------------------------------

EMBARGO_KEYS = ("embargo_until", "embargo_reason", "after_embargo")
FIELDS = ("title", "authors", "contact", "description", "subject", "keywords",
          "department", "related_publication", "code_repository", "code_doi", "funding",
          "license", "terms_of_use", "access", "opt_out_reason", *EMBARGO_KEYS,
          "documentation", "history", "ebrains")
EBRAINS_KEYS = ("data_types", "techniques", "experimental_approaches", "ethics_assessment")
PERSON_KEYS = {"name", "affiliation", "orcid", "email"}


class _Reader:
    """Reads every entry, noting each problem and going on, so that all are told at once."""

    def __init__(self, data: dict, files: Snapshot, lines: dict[str, int],
                 max_embargo_months: int | None = None):
        self.data, self.files = data, files
        self.problems = Problems(lines)
        self.max_embargo_months = max_embargo_months

    def fail(self, name: str, problem: str, fix: str) -> None:
        self.problems.add(name, f"'{name}' {problem}; {fix}")

    def text(self, name: str, value, required: bool = False, fix: str = "") -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(name, "is missing", fix or f"add '{name}: ...' ({TEMPLATE_HINT})")
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(name, f"must be text, found {type(value).__name__}",
                      f"write it as '{name}: some text'")
            return None
        return str(value).strip()

    def texts(self, name: str, value, required: bool = False, fix: str = "") -> list[str]:
        if value is None or value == [] or value == "":
            if required:
                self.fail(name, "is missing", fix or f"add '{name}: [...]' ({TEMPLATE_HINT})")
            return []
        items = value if isinstance(value, list) else [value]
        out = [self.text(f"{name}[{i}]", v, required=True,
                         fix="remove the empty entry or fill it in")
               for i, v in enumerate(items)]
        return [v for v in out if v is not None]

    def unknown(self, name: str, value: dict, known, what: str) -> None:
        for key in value:
            if key not in known:
                self.fail(f"{name}.{key}" if name else str(key), "is not a known field", what)

    def doi(self, name: str, value) -> str | None:
        value = self.text(name, value)
        if value is None:
            return None
        bare = identifiers.doi(value)
        if bare is None:
            self.fail(name, f"is not a DOI: {value!r}",
                      "write it as 10.xxxx/yyyy (https://doi.org/ prefix allowed)")
        return bare

    def person(self, name: str, value, need_email: bool = False) -> Person:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            self.fail(name, "must be a person (name, affiliation, orcid, email)",
                      "see the template")
            return Person("")
        self.unknown(name, value, PERSON_KEYS, "a person has name, affiliation, orcid and "
                                               "email")
        person = Person(self.text(f"{name}.name", value.get("name"), required=True,
                                  fix=f"add 'name: Family, Given' under {name}") or "",
                        self.text(f"{name}.affiliation", value.get("affiliation")))
        orcid = self.text(f"{name}.orcid", value.get("orcid"))
        if orcid is not None:
            person.orcid = identifiers.orcid(orcid)
            if person.orcid is None:
                self.fail(f"{name}.orcid", f"is not a valid ORCID iD: {orcid!r}",
                          "write it as 0000-0002-1825-0097 (check the last digit)")
        email = self.text(f"{name}.email", value.get("email"), required=need_email,
                          fix=f"add 'email: ...' under {name} (RDR requires a contact email)")
        if email is not None and not identifiers.email_ok(email):
            self.fail(f"{name}.email", f"is not an email address: {email!r}",
                      "write it as name@example.org")
        person.email = email
        return person

    def read(self) -> DatasetMetadata:
        d = self.data
        self.unknown("", d, FIELDS, f"known fields: {', '.join(FIELDS)}")
        title = self.text("title", d.get("title"), required=True,
                          fix="add 'title: <the dataset's title>'")
        authors_raw = d.get("authors")
        if not authors_raw:
            self.fail("authors", "is missing",
                      "add 'authors:' with at least one '- name: Family, Given' entry")
            authors_raw = []
        if not isinstance(authors_raw, list):
            authors_raw = [authors_raw]
        authors = [self.person(f"authors[{i}]", a) for i, a in enumerate(authors_raw)]
        if d.get("contact") is None:
            self.fail("contact", "is missing",
                      "add 'contact:' with 'name:' and 'email:' (RDR requires a contact)")
            contact = Person("")
        else:
            contact = self.person("contact", d.get("contact"), need_email=True)
        description, from_readme = self.description(d.get("description"))

        # The subject list is the server's (RDR has its own, and production RDR does not
        # require one): required and checked against it before the export sends anything.
        subject = list(dict.fromkeys(self.texts("subject", d.get("subject"))))

        code_repository = self.text("code_repository", d.get("code_repository"))
        if code_repository is not None and not identifiers.url_ok(code_repository):
            self.fail("code_repository", f"is not a URL: {code_repository!r}",
                      "write it as https://github.com/owner/repo")
        grants = self.grants(d.get("funding"))
        license, terms = self.license(d)
        access = self.choice("access", d.get("access"), ACCESS,
                             fix="add 'access: restricted' (with opt_out_reason) or "
                                 "'access: open'") or ""
        # required where the server has a field for it, and told with the server's choices
        # (server.py): the file alone does not know them
        reason = self.text("opt_out_reason", d.get("opt_out_reason"))
        until, why, after = self.embargo(d, access)
        documentation = self.documentation(d.get("documentation"))
        history = self.history(d.get("history"))
        keywords = self.texts("keywords", d.get("keywords"))
        related = self.doi("related_publication", d.get("related_publication"))
        code_doi = self.doi("code_doi", d.get("code_doi"))
        department = self.texts("department", d.get("department"))
        ebrains = self.ebrains(d.get("ebrains"))
        self.problems.raise_any()
        return DatasetMetadata(
            title=title, authors=authors, contact=contact, description=description,
            subject=subject, keywords=keywords, related_publication=related,
            code_repository=code_repository, code_doi=code_doi,
            funding=[f"{g.agency} {g.number}" if g.number else g.agency for g in grants],
            license=license, terms_of_use=terms, access=access, opt_out_reason=reason,
            embargo_until=until, embargo_reason=why, after_embargo=after,
            documentation=documentation, history=history, grants=grants,
            description_from_readme=from_readme, department=department, ebrains=ebrains,
            lines=self.problems.lines)

    def embargo(self, d: dict, access: str) -> tuple[dt.date | None, str | None, str | None]:
        """The embargo's end (a date in the future, within the server's maximum), its reason,
        and the access after it."""
        if access != "embargoed":
            for key in EMBARGO_KEYS:
                if d.get(key) not in (None, ""):
                    self.fail(key, f"is given but access is {access or 'not set'!r}",
                              "set 'access: embargoed' or remove it")
            return None, None, None
        until = self.date("embargo_until", d.get("embargo_until"))
        today = dt.date.today()
        if until is not None and until <= today:
            self.fail("embargo_until", f"{until.isoformat()} is not in the future",
                      "give the date the embargo ends, after today")
        elif until is not None and self.max_embargo_months is not None:
            limit = _add_months(today, self.max_embargo_months)
            if until > limit:
                self.fail("embargo_until", f"{until.isoformat()} is more than "
                          f"{self.max_embargo_months} months away, the server's maximum",
                          f"end the embargo by {limit.isoformat()}")
        why = self.text("embargo_reason", d.get("embargo_reason"), required=True,
                        fix="access is embargoed: add 'embargo_reason: ...' saying why "
                            "(e.g. the paper is under review)")
        after = self.choice("after_embargo", d.get("after_embargo"), AFTER_EMBARGO,
                            fix="access is embargoed: add 'after_embargo: open' (or "
                                "restricted) for what happens at the date")
        return until, why, after

    def choice(self, name: str, value, allowed, fix: str) -> str | None:
        """A required value, one of `allowed` (without regard to case)."""
        value = self.text(name, value, required=True, fix=fix)
        if value is not None and value.lower() not in allowed:
            self.fail(name, f"{value!r} is not one of {', '.join(allowed)}",
                      "write " + " or ".join(f"'{name}: {a}'" for a in allowed))
            return None
        return value.lower() if value is not None else None

    def date(self, name: str, value) -> dt.date | None:
        if value is None or value == "":
            self.fail(name, "is missing", f"add '{name}: YYYY-MM-DD'")
            return None
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):  # YAML reads 2027-06-30 as a date already
            return value
        try:
            return dt.date.fromisoformat(str(value).strip())
        except ValueError:
            self.fail(name, f"is not a date: {value!r}", "write it as YYYY-MM-DD, e.g. "
                                                          "2027-06-30")
            return None

    def description(self, value) -> tuple[str, bool]:
        description = self.text("description", value)
        if description is not None:
            return description, False
        description = first_paragraphs(self.files.readme())
        if not description:
            self.fail("description", "is missing and there is no README text to take it "
                      "from", "add 'description: ...' or write a README")
        return description, True

    def grants(self, value) -> list[Grant]:
        grants = []
        for i, g in enumerate(value if isinstance(value, list) else [value] if value else []):
            name = f"funding[{i}]"
            if isinstance(g, dict):
                self.unknown(name, g, {"agency", "grant"},
                             "a funding entry has 'agency' and 'grant'")
                agency = self.text(f"{name}.agency", g.get("agency"), required=True,
                                   fix=f"add 'agency: ...' under {name}")
                grants.append(Grant(agency or "", self.text(f"{name}.grant", g.get("grant"))))
            else:
                agency = self.text(name, g, required=True,
                                   fix="remove the empty entry or fill it in")
                grants.append(Grant(agency or ""))
        return grants

    def license(self, d: dict) -> tuple[str, str | None]:
        raw = self.text("license", d.get("license"), required=True,
                        fix="add 'license: CC-BY-4.0' (or CC0-1.0, or custom with "
                            "terms_of_use)")
        license = LICENSES.get(raw.lower()) if raw is not None else None
        if raw is not None and license is None:
            self.fail("license", f"{raw!r} is not supported",
                      "use CC-BY-4.0, CC0-1.0, or custom (with terms_of_use)")
        terms = self.text("terms_of_use", d.get("terms_of_use"), required=license == "custom",
                          fix="license is custom: add 'terms_of_use: ...' with the terms")
        return license or "", terms

    def history(self, value) -> str:
        """Who may read the deposited git history: its commits, file names and the files
        kept in git (not annexed) are in it."""
        if value is None or value == "":
            return "public"
        text = str(value).lower()
        if text not in ("public", "restricted"):
            self.fail("history", f"{value!r} is not one of public, restricted",
                      "write 'history: public' or 'history: restricted'")
            return "public"
        return text

    def documentation(self, value) -> list[str]:
        documentation = []
        for i, p in enumerate(self.texts("documentation", value)):
            posix = p.replace("\\", "/")
            if posix.startswith("/") or ".." in posix.split("/"):
                self.fail(f"documentation[{i}]", f"{p!r} is not a path inside the dataset",
                          "give the path relative to the dataset's top")
            elif self.files.dataset is not None and not self.files.exists(posix):
                where = (f"commit {self.files.commit}" if self.files.commit
                         else "the dataset")
                self.fail(f"documentation[{i}]", f"names {p!r}, which is not in {where}",
                          "fix the path or remove the entry (or 'datalad save' the file)")
            documentation.append(posix)
        return documentation

    def ebrains(self, value) -> dict[str, list[str]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail("ebrains", "must be a mapping",
                      f"give some of: {', '.join(EBRAINS_KEYS)}")
            return {}
        self.unknown("ebrains", value, EBRAINS_KEYS, f"known: {', '.join(EBRAINS_KEYS)}")
        return {key: self.texts(f"ebrains.{key}", value.get(key)) for key in EBRAINS_KEYS
                if value.get(key)}


def _add_months(day: dt.date, months: int) -> dt.date:
    """The same day `months` later (the month's last day where it is shorter)."""
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    last = (dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last))
