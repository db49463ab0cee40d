import json

import os
import subprocess
import sys

import pytest
import requests

from datalad_rdr.sandbox.cli import Sandbox

# Tests make commits: give them an identity where the machine has none.
for _var, _value in (("GIT_AUTHOR_NAME", "datalad-rdr tests"),
                     ("GIT_COMMITTER_NAME", "datalad-rdr tests"),
                     ("GIT_AUTHOR_EMAIL", "tests@localhost"),
                     ("GIT_COMMITTER_EMAIL", "tests@localhost")):
    os.environ.setdefault(_var, _value)

# git-annex from its PyPI wheel lives in this environment's bin (see README).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def make_sandbox():
    """Start sandboxes with a profile and Dataverse settings; all are stopped afterwards."""
    started = []

    def make(profile="rdr", **settings):
        sb = Sandbox(profile, **settings).start()
        started.append(sb)
        return sb

    yield make
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox("rdr")


# The CC BY license as each profile's server names it (GET /api/licenses).
CC_BY = {"rdr": ("CC-BY-4.0", "https://creativecommons.org/licenses/by/4.0/"),
         "dataverse": ("CC BY 4.0", "http://creativecommons.org/licenses/by/4.0")}


def citation_json(title="A test dataset", license_name="cc-by", extra_fields=(),
                  profile="rdr"):
    """A dataset's create JSON with the required citation fields of the profile's server.

    ``license_name``: "cc-by" for the server's CC BY, another name as given, None for none.
    """
    def prim(name, value):
        return {"typeName": name, "typeClass": "primitive", "multiple": False,
                "value": value}

    def vocab(name, value, multiple=False):
        return {"typeName": name, "typeClass": "controlledVocabulary", "multiple": multiple,
                "value": value}

    if profile == "rdr":  # KU Leuven's citation block (sandbox/metadatablocks.py)
        subject = "Medical and health sciences"  # optional on RDR, but in its list
        extra_fields = (
            {"typeName": "keyword", "typeClass": "compound", "multiple": True, "value": [
                {"keywordValue": prim("keywordValue", "test")}]},
            vocab("departmentFaculty", ["Department of Neurosciences"], multiple=True),
            prim("technicalFormat", "zip"),
            {"typeName": "access", "typeClass": "compound", "multiple": False, "value": {
                "accessRights": vocab("accessRights", "restricted"),
                "legitimateOptout": vocab("legitimateOptout", "privacy")}},
            *extra_fields)
    else:
        subject = "Medicine, Health and Life Sciences"

    fields = [
        prim("title", title),
        {"typeName": "author", "typeClass": "compound", "multiple": True, "value": [
            {"authorName": prim("authorName", "Doe, Jane"),
             "authorAffiliation": prim("authorAffiliation", "KU Leuven")}]},
        {"typeName": "datasetContact", "typeClass": "compound", "multiple": True,
         "value": [{"datasetContactEmail": prim("datasetContactEmail", "jane@example.org"),
                    "datasetContactName": prim("datasetContactName", "Doe, Jane")}]},
        {"typeName": "dsDescription", "typeClass": "compound", "multiple": True,
         "value": [{"dsDescriptionValue": prim("dsDescriptionValue", "Test data.")}]},
        *([{"typeName": "subject", "typeClass": "controlledVocabulary", "multiple": True,
            "value": [subject]}] if subject else []),
        *extra_fields,
    ]
    version = {"metadataBlocks": {"citation": {"displayName": "Citation Metadata",
                                               "fields": fields}}}
    if license_name == "cc-by":
        name, uri = CC_BY[profile]
        version["license"] = {"name": name, "uri": uri}
    elif license_name:
        version["license"] = {"name": license_name}
    return {"datasetVersion": version}


class DV:
    """A thin test client: the sandbox's Dataverse API with the depositor's token."""

    def __init__(self, sandbox, token=None):
        self.url = sandbox.dataverse_url
        self.sandbox = sandbox
        self.token = sandbox.api_token if token is None else token

    def call(self, method, path, **kw):
        headers = kw.pop("headers", {})
        if self.token:
            headers["X-Dataverse-key"] = self.token
        return requests.request(method, self.url + path, headers=headers, **kw)

    def create_dataset(self, **kw):
        r = self.call("POST", f"/api/dataverses/{self.sandbox.collection}/datasets",
                      json=citation_json(profile=self.sandbox.profile, **kw))
        assert r.status_code == 201, r.text
        return r.json()["data"]["persistentId"]

    def files(self, pid, version=":draft"):
        r = self.call("GET", f"/api/datasets/:persistentId/versions/{version}/files",
                      params={"persistentId": pid})
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def add_files(self, pid, specs):
        return self.call("POST", "/api/datasets/:persistentId/addFiles",
                         params={"persistentId": pid},
                         files={"jsonData": (None, json.dumps(specs), "application/json")})


@pytest.fixture
def dv(sandbox):
    return DV(sandbox)


@pytest.fixture
def token_env(sandbox, monkeypatch):
    """The sandbox, with its depositor token where rdr-export looks for it."""
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sandbox.api_token)
    return sandbox


def rdr_export(ds, sb, **kw):
    """``datalad rdr-export`` of ``ds`` into the sandbox's collection; the results as a list."""
    import datalad.api as dl

    kw.setdefault("url", sb.dataverse_url)
    kw.setdefault("collection", sb.collection)
    return dl.rdr_export(dataset=str(ds), result_renderer="disabled", return_type="list",
                         on_failure="ignore", **kw)


def run_as_user(cmd, cwd, token=None):
    """``cmd`` (a git or datalad command line) as a user of the sandbox: with ``token`` as
    the rdr credential, or with none at all (anonymous)."""
    env = dict(os.environ)
    env.pop("DATALAD_CREDENTIAL_RDR_SECRET", None)
    if token:
        env["DATALAD_CREDENTIAL_RDR_SECRET"] = token
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
