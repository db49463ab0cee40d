"""openMINDS JSON-LD from the metadata file, checked with the openminds package."""

import json

import datalad.api as dl
import pytest
from openminds import Collection

from datalad_rdr import manifest as mf
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.openminds_export import validation_problems
from test_metadata import write_metadata

EBRAINS = {"techniques": ["magnetic resonance imaging"],
           "experimental_approaches": ["neuroimaging"],
           "ethics_assessment": "EU compliant"}


@pytest.fixture
def bids(tmp_path):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=10_000)
    write_metadata(ds, ebrains=EBRAINS, related_publication="10.1234/paper.5",
                   funding=[{"agency": "FWO", "grant": "G0A1234N"}])
    return ds


def published(ds, doi="10.5072/FK2/ABCDEF"):
    """The manifest as 'rdr-export --publish' leaves it: DOI, version, release time."""
    mf.save(ds, mf.Manifest("https://rdr.example", f"doi:{doi}", "0" * 40, doi=doi,
                            version="1.0", published="2026-03-01T10:00:00Z"))


def openminds(ds, out, **kw):
    return dl.rdr_export(dataset=str(ds), openminds=str(out), result_renderer="disabled",
                         return_type="list", on_failure="ignore", **kw)


def load(path):
    collection = Collection()
    collection.load(str(path), version="v3")
    return collection


def test_openminds_output_validates_with_the_openminds_package(bids, tmp_path):
    published(bids)
    out = tmp_path / "out" / "dataset.jsonld"
    results = openminds(bids, out)
    assert [r["status"] for r in results] == ["ok"], results
    assert "validated by the openminds package" in results[0]["message"]

    collection = load(out)  # read back by the package, as EBRAINS tooling would
    assert validation_problems(collection) == []
    nodes = {type(n).__name__: n for n in collection}
    assert {"Dataset", "DatasetVersion", "Person", "ORCID", "DOI", "ContactInformation",
            "Organization", "Funding"} <= set(nodes)
    graph = json.loads(out.read_text())["@graph"]
    by_id = {n["@id"]: n for n in graph}
    version = next(n for n in graph if n["@type"].endswith("/DatasetVersion"))
    assert version["fullName"] == "datalad-rdr demo dataset"
    assert version["versionIdentifier"] == "1.0" and version["releaseDate"] == "2026-03-01"
    assert by_id[version["digitalIdentifier"]["@id"]]["identifier"] == \
        "https://doi.org/10.5072/FK2/ABCDEF"
    assert version["license"]["@id"].endswith("/licenses/CC-BY-4.0")
    assert version["accessibility"]["@id"].endswith("/controlledAccess")
    assert {t["@id"].rsplit("/", 1)[-1] for t in version["dataType"]} == {"rawData"}
    assert version["technique"][0]["@id"].endswith("/magneticResonanceImaging")
    authors = [by_id[a["@id"]] for a in version["author"]]
    assert [(a["givenName"], a["familyName"]) for a in authors] == [("Jane", "Doe"),
                                                                   ("Richard", "Roe")]
    orcid = by_id[authors[0]["digitalIdentifier"][0]["@id"]]
    assert orcid["identifier"] == "https://orcid.org/0000-0002-1825-0097"
    member_of = authors[0]["affiliation"][0]["memberOf"]["@id"]  # an embedded Affiliation
    assert by_id[member_of]["fullName"] == "KU Leuven"
    custodian = by_id[version["custodian"][0]["@id"]]
    assert by_id[custodian["contactInformation"]["@id"]]["email"] == "jane.doe@example.org"
    related = by_id[version["relatedPublication"][0]["@id"]]
    assert related["identifier"] == "https://doi.org/10.1234/paper.5"


def test_without_a_doi_nothing_is_written_and_publishing_is_named(bids, tmp_path):
    out = tmp_path / "dataset.jsonld"
    results = openminds(bids, out)
    assert results[0]["status"] == "error"
    assert "digital_identifier is required" in results[0]["message"]
    assert "--publish" in results[0]["message"]
    assert not out.exists()


@pytest.mark.parametrize("ebrains, words", [
    ({k: v for k, v in EBRAINS.items() if k != "techniques"},
     "'ebrains.techniques' is missing; openMINDS (EBRAINS curation) requires it"),
    ({**EBRAINS, "ethics_assessment": "approved"},
     "'ebrains.ethics_assessment' 'approved' is not an openMINDS EthicsAssessment; use one "
     "of: EU compliant; EU compliant +; US compliant; not required"),
])
def test_openminds_terms_are_checked_against_the_term_lists(bids, tmp_path, ebrains, words):
    write_metadata(bids, ebrains=ebrains)
    published(bids)
    results = openminds(bids, tmp_path / "x.jsonld")
    assert results[0]["status"] == "error" and words in results[0]["message"], results


def test_published_export_then_openminds_from_the_same_file(token_env, bids, tmp_path):
    """The whole way: export and publish on the sandbox; the DOI reaches openMINDS."""
    sb = token_env
    results = dl.rdr_export(dataset=str(bids), url=sb.dataverse_url,
                            collection=sb.collection, publish="major",
                            result_renderer="disabled", return_type="list",
                            on_failure="ignore")
    assert all(r["status"] in ("ok", "notneeded") for r in results), results
    doi = mf.load(bids).doi
    assert doi and doi.startswith("10.5072/")
    out = tmp_path / "dataset.jsonld"
    assert openminds(bids, out)[0]["status"] == "ok"
    graph = json.loads(out.read_text())["@graph"]
    assert {"identifier": f"https://doi.org/{doi}"} in [
        {k: v for k, v in n.items() if k == "identifier"} for n in graph]
    assert validation_problems(load(out)) == []
