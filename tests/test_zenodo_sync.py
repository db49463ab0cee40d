"""``datalad zenodo-sync`` against the sandbox's Zenodo, driven the way a user drives it.

Each test makes a real DataLad dataset, syncs it with the sandbox and checks the record
through Zenodo's API and the sandbox's request counters (``/_sandbox/stats``). StepUp
RepRep's own ``srr-sync-zenodo`` runs on the same zenodo.yaml to show that ours reads
StepUp's file unchanged and sends what StepUp sends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests
from datalad.api import clone, create

from datalad_rdr.commands.zenodo_sync import ZenodoSync  # noqa: F401 - binds ds.zenodo_sync
from datalad_rdr.sandbox.cli import Sandbox
from datalad_rdr.sandbox.invenio import ZenodoFault
from datalad_rdr.zenodo.members import ZenodoFile, build_zip

RDM = "application/vnd.inveniordm.v1+json"
CREDENTIAL = "zenodosandbox"  # DATALAD_CREDENTIAL_ZENODOSANDBOX_{SECRET,REALM}

# StepUp 4's template (docs/reference/sync_zenodo_config.md), its placeholders filled in.
STEPUP_EXAMPLE = """\
path_record_id: .zenodo-record-id.txt  # required
endpoint: {endpoint}
metadata:
  title: 'Code and small outputs of a test study'
  version: '{version}'
  resource_type: dataset
  publisher: 'Zenodo'
  creators:
    - given_name: 'Jane'
      family_name: 'Doe'
      identifiers:
        orcid: '0000-0002-1825-0097'
      affiliations:
        - ror: 03yrm5c26
        - name: >-
            Research group,
            University,
            City,
            Country
    - given_name: 'John'
      family_name: 'Roe'
      affiliations:
        - name: KU Leuven
  keywords:
    - datalad
    - zenodo
  license:
    - cc-by-4.0
  copyright: 'Copyright statement'
  languages:
    - eng
  related:
    - scheme: doi
      identifier: 10.1234/zenodo.1234567
      relation_type: cites
      resource_type: publication
  funding:
    - funder:
        name: 'Full name of the funder'
      award:
        title: 'Full title of the award'
        number: 'Award number'
        identifiers:
          - identifier: 'https://example.org/award/1234'
custom_fields:
  code_repository: https://github.com/example/repo2
  development_status: active
  programming_languages:
    - python
  rights_holder: 'Name of a rights holder'
  journal:
    title: 'Full name of the journal'
    volume: '42'
    issn: '0378-5955'
access:
  record: public
  files: public
"""


def minimal_config(endpoint, version="1.0.0", paths=("data.csv", "notes.txt"),
                   title="A small test record"):
    lines = "".join(f"  - {p}\n" for p in paths)
    return f"""\
path_record_id: .zenodo-record-id.txt
endpoint: {endpoint}
metadata:
  title: '{title}'
  version: '{version}'
  resource_type: software
  publisher: Zenodo
  license: cc-by-4.0
  creators:
    - family_name: Doe
      given_name: Jane
paths:
{lines}"""


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sb():
    """One sandbox for the module (each test makes its own record and resets the counters)."""
    sandbox = Sandbox("rdr").start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def zenodo(sb):
    sb.zenodo.stats.reset()
    sb.zenodo.faults.clear()
    yield sb
    sb.zenodo.faults.clear()


@pytest.fixture(autouse=True)
def session_env(monkeypatch):
    for var in ("REPREP_ZENODO_TOKEN", "REPREP_PATH_ZENODO_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Depositor")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "depositor@example.org")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Depositor")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "depositor@example.org")


@pytest.fixture
def with_credential(zenodo, monkeypatch):
    """The token as a DataLad credential from the environment (realm: the endpoint)."""
    monkeypatch.setenv(f"DATALAD_CREDENTIAL_{CREDENTIAL.upper()}_SECRET",
                       zenodo.zenodo_settings.token)
    monkeypatch.setenv(f"DATALAD_CREDENTIAL_{CREDENTIAL.upper()}_REALM", zenodo.zenodo_url)
    return zenodo


def make_dataset(path: Path, files: dict, config: str | None = None,
                 config_name="zenodo.yaml"):
    ds = create(str(path), result_renderer="disabled")
    for name, content in files.items():
        write(path / name, content)
    if config is not None:
        write(path / config_name, config)
    ds.save(result_renderer="disabled")
    return ds


def write(path: Path, content) -> None:
    """Write a file in a dataset; an annexed file is replaced, not written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


def sync(ds, *args, **kw) -> list[dict]:
    return ds.zenodo_sync(*args, result_renderer="disabled", on_failure="ignore",
                          return_type="list", **kw)


def ok(results) -> list[dict]:
    bad = [r for r in results if r["status"] in ("error", "impossible")]
    assert not bad, [r["message"] for r in bad]
    return results


def api(sb, method, path, **kw):
    headers = {"Authorization": f"Bearer {sb.zenodo_settings.token}", "Accept": RDM}
    return requests.request(method, sb.zenodo_url + path, headers=headers,
                            allow_redirects=False, **kw)


def online_files(sb, rid) -> dict:
    r = api(sb, "GET", f"/records/{rid}/draft")
    if r.status_code == 404:
        r = api(sb, "GET", f"/records/{rid}")
    return {k: (e["size"], e["checksum"]) for k, e in r.json()["files"]["entries"].items()
            if "checksum" in e}  # committed files only


def local_files(root: Path, names) -> dict:
    out = {}
    for n in names:
        data = (root / n).read_bytes()
        out[Path(n).name] = (len(data), "md5:" + hashlib.md5(data).hexdigest())
    return out


def record_id(root: Path) -> str:
    return (root / ".zenodo-record-id.txt").read_text().strip()


def stats(sb) -> dict:
    return requests.get(sb.zenodo_server.url + "/_sandbox/stats").json()


def srr_sync_zenodo(cwd, *args, token):
    exe = os.path.join(os.path.dirname(sys.executable), "srr-sync-zenodo")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "REPREP_ZENODO_TOKEN": token}, timeout=120)


# -- StepUp's zenodo.yaml, unchanged --------------------------------------------------------
def test_stepup_example_works_with_srr_sync_zenodo_and_ours(with_credential, tmp_path):
    pytest.importorskip("stepup.reprep.sync_zenodo")
    sb = with_credential
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "x,y\n1,2\n", "notes.txt": "notes\n",
                             "zenodo.md": "# Test study\n\nCode and *outputs*.\n"},
                      STEPUP_EXAMPLE.format(endpoint=sb.zenodo_url, version="1.0.0"),
                      config_name="sync_zenodo.yaml")
    args = ("sync_zenodo.yaml", "data.csv", "notes.txt", "--description", "zenodo.md")
    run = srr_sync_zenodo(root, *args, token=sb.zenodo_settings.token)
    assert run.returncode == 0, run.stdout + run.stderr
    rid = record_id(root)
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt"])

    # ours reads the same file and finds StepUp's draft exactly as it would have made it
    sb.zenodo.stats.reset()
    results = ok(sync(ds, "sync_zenodo.yaml", ["data.csv", "notes.txt"],
                      description="zenodo.md"))
    assert stats(sb)["changing"] == 0 and stats(sb)["upload_bytes"] == 0
    assert {r["message"] for r in results} >= {f"metadata of draft {rid} unchanged"}

    # ours changes one file; StepUp then syncs the same draft again without complaint
    write(root / "notes.txt", "second notes\n")
    ds.save(result_renderer="disabled")
    sb.zenodo.stats.reset()
    ok(sync(ds, "sync_zenodo.yaml", ["data.csv", "notes.txt"], description="zenodo.md"))
    assert stats(sb)["upload_bytes"] == len("second notes\n")
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt"])
    run = srr_sync_zenodo(root, *args, token=sb.zenodo_settings.token)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Same MD5" in run.stdout and "Uploading" not in run.stdout
    draft = api(sb, "GET", f"/records/{rid}/draft").json()
    assert draft["custom_fields"]["code:codeRepository"] == "https://github.com/example/repo2"
    assert draft["metadata"]["description"].startswith("<h1>Test study</h1>")
    # what ours remembers, in the dataset's history
    saved = json.loads((root / ".datalad/rdr/zenodo.json").read_text())["sync_zenodo.yaml"]
    assert saved["record_id"] == rid and saved["state"] == "draft"
    assert saved["files"]["notes.txt"]["md5"] == hashlib.md5(b"second notes\n").hexdigest()
    assert ds.repo.call_git(["status", "--porcelain", "--", ".datalad/rdr"]) == ""


# StepUp 3.1's template (docs/advanced_topics/sync_zenodo.md), its placeholders filled in.
STEPUP_3_1_EXAMPLE = """\
path_record_id: .zenodo-record-id.txt
endpoint: {endpoint}
path_token: {token}
metadata:
  title: 'A title'
  version: '1.0.0'
  keywords:
    - keyword1
    - keyword2
  license:
    - cc-by-nc-4.0
  resource_type: dataset
  publisher: 'Publisher name'
  creators:
    - family_name: 'Last name 1'
      given_name: 'First name 1'
      identifiers:
        orcid: '0000-0002-1825-0097'
      affiliations:
        - ror: 03yrm5c26
        - name: >-
            Research group,
            University,
            City,
            Country
    - name: 'Last name 2, First name 2'
      affiliations:
        - name: Research group
  related:
    - scheme: doi
      identifier: 10.1234/zenodo.1234567
      relation_type: cites
      resource_type: publication
  funding:
    - funder:
        ror: 03yrm5c26
      award:
        title: 'Full title of the award'
        number: 'Award number'
        identifiers:
          - url: 'https://example.org/award/1234'
code_repository: https://github.com/example/repo2
path_readme: zenodo.md
paths:
  - file1
  - sub/file2
"""
LEGACY_STEPUP = os.environ.get("DATALAD_RDR_STEPUP_LEGACY")


@pytest.mark.skipif(not LEGACY_STEPUP, reason="set DATALAD_RDR_STEPUP_LEGACY to a "
                    "directory holding stepup-reprep 3.1.x (pip install --target)")
def test_stepup_3_1_example_works_with_its_srr_sync_zenodo_and_ours(zenodo, tmp_path):
    token = tmp_path / "token.txt"
    token.write_text(zenodo.zenodo_settings.token + "\n")
    root = tmp_path / "ds"
    ds = make_dataset(root, {"file1": "one\n", "sub/file2": "two\n",
                             "zenodo.md": "Some *notes*.\n"},
                      STEPUP_3_1_EXAMPLE.format(endpoint=zenodo.zenodo_url, token=token))

    def srr_3_1():
        run = subprocess.run([sys.executable, "-m", "stepup.reprep.sync_zenodo",
                              "zenodo.yaml"], cwd=root, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONPATH": LEGACY_STEPUP})
        assert run.returncode == 0, run.stdout + run.stderr

    srr_3_1()
    rid = record_id(root)
    zenodo.zenodo.stats.reset()
    ok(sync(ds))  # ours takes over StepUp's draft: no file is sent again
    assert stats(zenodo)["upload_bytes"] == 0
    assert record_id(root) == rid
    draft = api(zenodo, "GET", f"/records/{rid}/draft").json()
    # StepUp 3.1 dropped the 'name:' creator of its own docs; ours reads it
    assert [c["person_or_org"]["family_name"] for c in draft["metadata"]["creators"]] == \
        ["Last name 1", "Last name 2"]
    write(root / "file1", "one, changed\n")
    ds.save(result_renderer="disabled")
    zenodo.zenodo.stats.reset()
    ok(sync(ds))
    assert stats(zenodo)["upload_bytes"] == len("one, changed\n")
    srr_3_1()  # and StepUp 3.1 still syncs the draft ours left
    assert online_files(zenodo, rid) == local_files(root, ["file1", "sub/file2"])


def test_stepup_3_1_config_with_token_file_and_readme(zenodo, tmp_path):
    """StepUp 3.1's form: path_token, paths, path_readme, code_repository at the top."""
    config = minimal_config(zenodo.zenodo_url).replace(
        "paths:", "path_token: ~/no-such-token.txt\npath_readme: README.md\n"
                  "code_repository: https://github.com/example/repo\npaths:")
    config = config.replace("    - family_name: Doe\n      given_name: Jane",
                            "    - name: 'Doe, Jane'")  # the 3.1 docs' creator form
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n",
                             "README.md": "Some *notes*.\n"}, config)
    # no token file: validated, nothing sent; a dry run asked for no more...
    results = ok(sync(ds, dry_run=True))
    assert "zenodo.yaml is valid: 2 file(s)" in results[-1]["message"]
    # ...but a sync did not happen, and says so with how to give the token (not "ok")
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    assert "nothing was sent" in results[-1]["message"]
    assert "datalad credentials set zenodo secret=<token> realm=http://127.0.0.1:" in \
        results[-1]["message"]
    assert stats(zenodo)["requests"] == 0
    token = tmp_path / "token.txt"
    token.write_text(zenodo.zenodo_settings.token + "\n")
    write(root / "zenodo.yaml", config.replace("~/no-such-token.txt", str(token)))
    ok(sync(ds))
    draft = api(zenodo, "GET", f"/records/{record_id(root)}/draft").json()
    person = draft["metadata"]["creators"][0]["person_or_org"]
    assert (person["family_name"], person["given_name"]) == ("Doe", "Jane")
    assert draft["metadata"]["description"] == "<p>Some <em>notes</em>.</p>\n"
    assert draft["custom_fields"] == {"code:codeRepository": "https://github.com/example/repo"}


def test_identifiers_are_judged_as_in_metadata_yaml_and_sent_bare(zenodo, tmp_path):
    """ORCID and DOI checks are datalad_rdr.identifiers': their URL forms are taken, and
    Zenodo gets the bare identifier."""
    config = minimal_config(zenodo.zenodo_url).replace(
        "given_name: Jane",
        "given_name: Jane\n      identifiers: {orcid: 'https://orcid.org/0000-0002-1825-0097'}"
    ).replace("paths:", "  related:\n    - {scheme: doi, identifier: "
                        "'https://doi.org/10.1234/abc', relation_type: cites}\npaths:")
    ds = make_dataset(tmp_path / "ds", {"data.csv": "1\n", "notes.txt": "n\n"}, config)
    metadata = ok(sync(ds, dry_run=True))[-1]["zenodo_body"]["metadata"]
    assert metadata["creators"][0]["person_or_org"]["identifiers"] == \
        [{"scheme": "orcid", "identifier": "0000-0002-1825-0097"}]
    assert metadata["related_identifiers"][0]["identifier"] == "10.1234/abc"


def test_config_problems_are_listed_before_anything_is_sent(zenodo, tmp_path):
    config = minimal_config(zenodo.zenodo_url, version="1.0").replace(
        "version: '1.0'", "version: 1.0").replace(
        "given_name: Jane", "given_name: Jane\n      identifiers: {orcid: '0000-0002-1825-0098'}")
    ds = make_dataset(tmp_path / "ds", {"data.csv": "1\n", "notes.txt": "n\n"},
                      config + "colour: blue\n")
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    problems = results[0]["problems"]
    assert any(p.startswith("metadata.version: expected a string") for p in problems)
    assert any("not a valid ORCID" in p for p in problems)
    assert "colour: unknown key" in problems
    assert stats(zenodo)["requests"] == 0


# -- what is sent ---------------------------------------------------------------------------
def test_first_run_then_only_what_changed(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "x,y\n1,2\n", "notes.txt": "notes\n",
                             "big.bin": os.urandom(200_000)},
                      minimal_config(sb.zenodo_url, paths=("data.csv", "notes.txt",
                                                           "big.bin")))
    # a dry run reads nothing it does not need and changes nothing
    results = ok(sync(ds, dry_run=True))
    assert any("would create a draft" in r["message"] for r in results)
    assert stats(sb)["requests"] == 0 and not (root / ".zenodo-record-id.txt").exists()

    ok(sync(ds))
    rid = record_id(root)
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt", "big.bin"])
    first = stats(sb)
    assert first["upload_bytes"] == sum(s for s, _ in online_files(sb, rid).values())
    assert first["by_route"]["POST init_files"] == 1  # all files announced at once
    draft = api(sb, "GET", f"/records/{rid}/draft").json()
    assert draft["files"]["order"] == ["data.csv", "notes.txt", "big.bin"]
    log = ds.repo.format_commit("%s")
    assert log.startswith(f"[DATALAD RDR] zenodo-sync: record {rid}")

    # nothing changed: no byte, no changing request
    sb.zenodo.stats.reset()
    results = ok(sync(ds))
    assert stats(sb)["changing"] == 0 and stats(sb)["upload_bytes"] == 0
    assert sorted(r["status"] for r in results if r.get("zenodo_key")) == ["notneeded"] * 3

    # one changed file, and one no longer listed: exactly that is sent and deleted
    write(root / "notes.txt", "notes, second edition\n")
    ds.save(result_renderer="disabled")
    write(root / "zenodo.yaml", minimal_config(sb.zenodo_url))  # big.bin dropped
    sb.zenodo.stats.reset()
    results = ok(sync(ds))
    s = stats(sb)
    assert s["upload_bytes"] == len("notes, second edition\n")
    assert s["by_route"]["PUT upload_content"] == 1
    assert s["by_route"]["DELETE delete_file"] == 2  # big.bin, and the old notes.txt
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt"])
    sent = [r for r in results if r.get("bytes")]
    assert [(r["zenodo_key"], r["bytes"]) for r in sent] == [("notes.txt", 22)]

    # a dry run says what would change
    write(root / "data.csv", "x,y\n1,2\n3,4\n")
    ds.save(result_renderer="disabled")
    sb.zenodo.stats.reset()
    results = ok(sync(ds, dry_run=True))
    assert [r["message"] for r in results if r.get("zenodo_key") == "data.csv"] == \
        ["data.csv: would replace (12 bytes)"]
    assert stats(sb)["changing"] == 0


def test_new_version_imports_unchanged_files(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    files = {"data.csv": "x,y\n1,2\n", "notes.txt": "notes\n", "blob.bin": os.urandom(50_000)}
    config = minimal_config(sb.zenodo_url, paths=list(files))
    ds = make_dataset(root, files, config)
    results = ok(sync(ds, publish=True))
    v1 = record_id(root)
    published = api(sb, "GET", f"/records/{v1}").json()
    assert published["is_published"] and published["pids"]["doi"]["identifier"] == \
        f"10.5281/zenodo.{v1}"
    assert any("published version 1.0.0" in r["message"] for r in results)

    # same version, a changed file: refused (a published version's files are locked)
    write(root / "notes.txt", "notes, revised\n")
    ds.save(result_renderer="disabled")
    sb.zenodo.stats.reset()
    results = sync(ds)
    assert results[-1]["status"] == "error"
    assert "notes.txt changed" in results[-1]["message"] and \
        "metadata.version" in results[-1]["message"]
    assert stats(sb)["changing"] == 0

    # version bumped: a new version, the unchanged files imported, the changed one sent
    # (first interrupted right after the new version was made: the next run resumes)
    write(root / "zenodo.yaml", config.replace("'1.0.0'", "'1.1.0'"))
    sb.zenodo.stats.reset()
    sb.zenodo.inject(ZenodoFault("POST", r"/files-import$", status=400))
    assert sync(ds, publish=True)[-1]["status"] == "error"
    ok(sync(ds, publish=True))
    v2 = record_id(root)
    assert v2 != v1
    s = stats(sb)
    assert s["by_route"]["POST import_files"] == 1
    assert s["upload_bytes"] == len("notes, revised\n")
    assert s["by_route"]["PUT upload_content"] == 1
    record = api(sb, "GET", f"/records/{v2}").json()
    assert record["parent"]["id"] == published["parent"]["id"]
    assert record["metadata"]["version"] == "1.1.0"
    assert online_files(sb, v2) == local_files(root, list(files))
    saved = json.loads((root / ".datalad/rdr/zenodo.json").read_text())["zenodo.yaml"]
    assert [(v["record_id"], v["version"]) for v in saved["versions"]] == \
        [(v1, "1.0.0"), (v2, "1.1.0")]
    assert saved["concept_doi"] == f"10.5281/zenodo.{published['parent']['id']}"

    # an older version is refused
    write(root / "zenodo.yaml", config.replace("'1.0.0'", "'1.0.1'"))
    results = sync(ds)
    assert results[-1]["status"] == "error" and "older" in results[-1]["message"]


def test_published_metadata_changes_only_with_publish(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    config = minimal_config(sb.zenodo_url)
    ds = make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"}, config)
    ok(sync(ds, publish=True))
    rid = record_id(root)
    revision = api(sb, "GET", f"/records/{rid}").json()["revision_id"]

    sb.zenodo.stats.reset()
    ok(sync(ds))  # published, nothing changed: StepUp would edit and republish here
    assert stats(sb)["changing"] == 0

    write(root / "zenodo.yaml", config.replace("A small test record", "A better title"))
    results = ok(sync(ds))
    assert any("--publish" in r["message"] and "metadata.title" in r["message"]
               for r in results)
    assert stats(sb)["changing"] == 0
    ok(sync(ds, publish=True))
    record = api(sb, "GET", f"/records/{rid}").json()
    assert record["metadata"]["title"] == "A better title"
    assert record["revision_id"] > revision


def test_folders_globs_and_a_folder_as_one_zip(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    files = {"data/a.csv": "a\n", "data/deep/b.csv": "b\n", "src/run.py": "print(1)\n",
             "src/lib/util.py": "x = 1\n", "notes.txt": "n\n"}
    config = minimal_config(sb.zenodo_url, paths=["data/", "'*.txt'"]) + \
        "  - zip: src\n"
    ds = make_dataset(root, files, config)
    ok(sync(ds))
    rid = record_id(root)
    assert set(online_files(sb, rid)) == {"a.csv", "b.csv", "notes.txt", "src.zip"}
    r = api(sb, "GET", f"/records/{rid}/draft/files/src.zip/content")
    zpath = tmp_path / "src.zip"
    zpath.write_bytes(r.content)
    with zipfile.ZipFile(zpath) as zf:
        assert zf.namelist() == ["src/lib/util.py", "src/run.py"]
        assert zf.read("src/run.py") == b"print(1)\n"
    # unchanged folder: the ZIP is not rebuilt or sent
    sb.zenodo.stats.reset()
    ok(sync(ds))
    assert stats(sb)["upload_bytes"] == 0
    # a changed member: the ZIP is sent again
    write(root / "src/run.py", "print(2)\n")
    ds.save(result_renderer="disabled")
    sb.zenodo.stats.reset()
    ok(sync(ds))
    assert stats(sb)["by_route"]["PUT upload_content"] == 1
    assert online_files(sb, rid)["src.zip"][0] == stats(sb)["upload_bytes"]


def test_zip_is_deterministic(tmp_path):
    folder = tmp_path / "src"
    for name, text in {"b.txt": "b\n", "a/c.txt": "c\n"}.items():
        write(folder / name, text)
    md5s = []
    for n in range(2):
        for p in folder.rglob("*"):
            os.utime(p, (1_000_000 * (n + 1), 1_000_000 * (n + 1)))
        files = sorted(folder.rglob("*.txt"), reverse=bool(n))
        m = ZenodoFile("src.zip", files, "src", folder, zip_root=tmp_path)
        build_zip(m, tmp_path / f"{n}.zip")
        md5s.append(m.md5)
    assert md5s[0] == md5s[1]
    assert m.md5 == hashlib.md5((tmp_path / "1.zip").read_bytes()).hexdigest()


def test_zip_comes_from_the_bundle_writer(tmp_path):
    """The project's one ZIP writer (datalad_rdr.zipstream): compressed formats are STORED,
    and names it could not write are refused before anything is sent."""
    folder = tmp_path / "figs"
    write(folder / "plot.png", os.urandom(5000))
    write(folder / "notes.txt", "text " * 200)
    m = ZenodoFile("figs.zip", sorted(folder.rglob("*")), "figs", folder, zip_root=tmp_path)
    build_zip(m, tmp_path / "figs.zip")
    with zipfile.ZipFile(tmp_path / "figs.zip") as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
        assert zf.testzip() is None
    assert methods == {"figs/notes.txt": zipfile.ZIP_DEFLATED,
                       "figs/plot.png": zipfile.ZIP_STORED}


def test_zip_member_name_it_cannot_hold_is_refused(zenodo, tmp_path):
    ds = make_dataset(tmp_path / "ds", {"src/back\\slash.py": "x\n", "data.csv": "1\n",
                                        "notes.txt": "n\n"},
                      minimal_config(zenodo.zenodo_url) + "  - zip: src\n")
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    assert "backslash" in results[0]["message"] and "src" in results[0]["message"]
    assert stats(zenodo)["requests"] == 0


# -- failures, limits and refusals ----------------------------------------------------------
def test_rides_out_429_and_504(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "1,2\n", "notes.txt": "n\n"},
                      minimal_config(sb.zenodo_url))
    faults = [sb.zenodo.inject(ZenodoFault("POST", r"^/api/records$", status=429, retry_after=1)),
              sb.zenodo.inject(ZenodoFault("PUT", r"/content$", status=504, count=2)),
              sb.zenodo.inject(ZenodoFault("POST", r"/actions/publish$", status=504,
                                     when="after"))]
    results = ok(sync(ds, publish=True))
    assert [f.hits for f in faults] == [1, 2, 1]
    rid = record_id(root)
    record = api(sb, "GET", f"/records/{rid}").json()
    assert record["is_published"]
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt"])
    assert stats(sb)["by_route"]["POST create_draft"] == 1  # the refused one never arrived
    assert any("published version" in r["message"] for r in results)


def test_interrupted_upload_is_completed_next_run(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "1,2\n", "notes.txt": "n\n"},
                      minimal_config(sb.zenodo_url))
    # the second upload is refused for good (not a transient answer): the run stops
    sb.zenodo.inject(ZenodoFault("PUT", r"/notes\.txt/content$", status=400))
    results = sync(ds)
    assert results[-1]["status"] == "error" and "uploading notes.txt" in \
        results[-1]["message"]
    rid = record_id(root)  # written as soon as the draft existed, and saved
    assert ds.repo.call_git(["status", "--porcelain"]) == ""
    assert online_files(sb, rid) == local_files(root, ["data.csv"])
    # the next run completes the announced file and sends nothing else
    sb.zenodo.stats.reset()
    ok(sync(ds))
    s = stats(sb)
    assert s["upload_bytes"] == len("n\n") and "POST init_files" not in s["by_route"]
    assert online_files(sb, rid) == local_files(root, ["data.csv", "notes.txt"])


def test_101st_file_and_file_over_limit_refused_before_upload(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    files = {f"many/f{i:03d}.txt": f"{i}\n" for i in range(101)}
    ds = make_dataset(root, files, minimal_config(sb.zenodo_url, paths=["many"]))
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    assert "101 files to send, but Zenodo takes at most 100 per record" in \
        results[0]["message"]
    assert stats(sb)["requests"] == 0

    write(root / "zenodo.yaml", minimal_config(sb.zenodo_url, paths=["big.bin", "notes.txt"]))
    write(root / "big.bin", b"x" * 2000)
    write(root / "notes.txt", "n\n")
    ds.save(result_renderer="disabled")
    ds.config.set("datalad.rdr.zenodo.max-bytes", "1000", scope="local")
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    assert "big.bin (big.bin) is 2.0 kB, over the 1.0 kB Zenodo takes per record" in \
        results[0]["message"]
    assert stats(sb)["requests"] == 0 and not (root / ".zenodo-record-id.txt").exists()


def test_duplicate_names_refused_naming_both(zenodo, tmp_path):
    ds = make_dataset(tmp_path / "ds", {"a/x.txt": "1\n", "b/x.txt": "2\n"},
                      minimal_config(zenodo.zenodo_url, paths=["a/x.txt", "b"]))
    results = sync(ds)
    assert [r["status"] for r in results] == ["impossible"]
    assert "two files would be called 'x.txt' on Zenodo" in results[0]["message"]
    assert "a/x.txt and b/x.txt" in results[0]["message"]
    assert stats(zenodo)["requests"] == 0


# -- remembered in the dataset, usable by clones ------------------------------------------
def test_fresh_clone_gets_annexed_file_from_zenodo(with_credential, tmp_path):
    sb = with_credential
    root = tmp_path / "ds"
    content = os.urandom(30_000)
    ds = make_dataset(root, {"data/blob.bin": content, "notes.txt": "n\n"},
                      minimal_config(sb.zenodo_url, paths=["data/blob.bin", "notes.txt"]))
    write(root / ".datalad/rdr/manifest.json", json.dumps({"doi": "10.5072/FK2/ABCDEF"}))
    ds.save(result_renderer="disabled")
    ok(sync(ds, publish=True))
    rid = record_id(root)
    related = api(sb, "GET", f"/records/{rid}").json()["metadata"]["related_identifiers"]
    assert {"scheme": "doi", "identifier": "10.5072/FK2/ABCDEF",
            "relation_type": {"id": "issupplementedby"},
            "resource_type": {"id": "dataset"}} in related
    url = f"{sb.zenodo_url}/records/{rid}/files/blob.bin/content"
    assert url in ds.repo.call_annex(["whereis", "data/blob.bin"])

    # git-annex refuses loopback addresses unless told; the sandbox is on 127.0.0.1
    ds.config.set("annex.security.allowed-ip-addresses", "all", scope="local")
    ds.drop("data/blob.bin", result_renderer="disabled")  # safe: Zenodo has a copy
    assert not (root / "data/blob.bin").exists()

    cloned = clone(source=str(root), path=str(tmp_path / "clone"),
                   result_renderer="disabled")
    cloned.config.set("annex.security.allowed-ip-addresses", "all", scope="local")
    got = cloned.get("data/blob.bin", result_renderer="disabled", return_type="list")
    assert got[0]["status"] == "ok"
    assert (tmp_path / "clone/data/blob.bin").read_bytes() == content
    saved = json.loads((tmp_path / "clone/.datalad/rdr/zenodo.json").read_text())
    assert saved["zenodo.yaml"]["urls_registered"] == [rid]


def test_command_line(zenodo, tmp_path):
    """``datalad zenodo-sync`` from a shell, as the extension registers it."""
    root = tmp_path / "ds"
    make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"},
                 minimal_config(zenodo.zenodo_url))
    datalad = os.path.join(os.path.dirname(sys.executable), "datalad")
    run = subprocess.run([datalad, "-f", "json", "zenodo-sync",
                          "--dry-run"], cwd=root, capture_output=True, text=True,
                         env={**os.environ,
                              "REPREP_ZENODO_TOKEN": zenodo.zenodo_settings.token},
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert any("would create a draft" in r["message"] for r in lines)
    assert zenodo.zenodo_settings.token not in run.stdout + run.stderr
    # without a token a sync is not a success a CI job could believe (trial 6.2)
    no_token = {k: v for k, v in os.environ.items()
                if not k.startswith(("DATALAD_CREDENTIAL_", "REPREP_"))}
    run = subprocess.run([datalad, "zenodo-sync"], cwd=root, capture_output=True,
                         text=True, env=no_token, timeout=120)
    assert run.returncode != 0
    assert "nothing was sent: set DATALAD_CREDENTIAL_ZENODO_SECRET" in run.stdout
    run = subprocess.run([datalad, "zenodo-sync", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert "StepUp" in run.stdout and "--publish" in run.stdout


# -- the token: one credential workflow with RDR ----------------------------------------------
@pytest.fixture
def own_home(tmp_path):
    """A shell of a user with a home of their own: git config and a plain-text keyring there,
    so stored credentials (and their last-used mark) are seen, and nothing else is."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DATALAD_CREDENTIAL_", "XDG_", "REPREP_"))}
    env.update(HOME=str(home), PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring")
    return env


def datalad_cli(args, cwd, env):
    exe = os.path.join(os.path.dirname(sys.executable), "datalad")
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def global_config(env) -> str:
    return subprocess.run(["git", "config", "--global", "--list"], env=env,
                          capture_output=True, text=True).stdout


def test_accepted_token_is_marked_last_used_and_never_shown(zenodo, own_home, tmp_path):
    token = zenodo.zenodo_settings.token
    root = tmp_path / "ds"
    make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"},
                 minimal_config(zenodo.zenodo_url))
    # stored under a name of the user's choosing: found by its realm, the server's URL
    stored = datalad_cli(["credentials", "set", "mysandbox", f"secret={token}",
                          f"realm={zenodo.zenodo_url}"], root, own_home)
    assert stored.returncode == 0, stored.stderr
    assert "last-used" not in global_config(own_home)

    run = datalad_cli(["-l", "debug", "zenodo-sync"], root, own_home)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "created: record" in run.stdout
    assert token not in run.stdout + run.stderr  # not even at -l debug
    config = global_config(own_home)
    assert "datalad.credential.mysandbox.last-used=" in config
    assert token not in config
    assert token not in (root / ".git/config").read_text()

    # a rerun with nothing to do says so (it once read "updated ..., 0 bytes sent")
    run = datalad_cli(["zenodo-sync"], root, own_home)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "is up to date: nothing changed, nothing sent" in run.stdout


def test_refused_token_gets_a_hint_and_is_not_marked(zenodo, own_home, tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"},
                 minimal_config(zenodo.zenodo_url))
    stored = datalad_cli(["credentials", "set", "stale", "secret=expired-token",
                          f"realm={zenodo.zenodo_url}"], root, own_home)
    assert stored.returncode == 0, stored.stderr
    run = datalad_cli(["zenodo-sync", "--credential", "stale"], root, own_home)
    assert run.returncode != 0
    assert "HTTP 403: Permission denied." in run.stdout + run.stderr
    assert "Zenodo refused the token from credential stale" in run.stdout + run.stderr
    assert "expired-token" not in run.stdout + run.stderr
    assert "last-used" not in global_config(own_home)
    assert not (root / ".zenodo-record-id.txt").exists()

    # the same on a published record (trial 6.13: its draft read answered 403, no hint)
    good = {**own_home, "DATALAD_CREDENTIAL_GOOD_SECRET": zenodo.zenodo_settings.token}
    published = datalad_cli(["zenodo-sync", "--publish", "--credential", "good"], root, good)
    assert published.returncode == 0, published.stdout
    assert "last-used" not in global_config(own_home)  # a credential of the environment
    run = datalad_cli(["zenodo-sync", "--credential", "stale"], root, own_home)
    assert run.returncode != 0
    assert f"reading draft {record_id(root)}: HTTP 403" in run.stdout
    assert "Zenodo refused the token from credential stale" in run.stdout
    assert "last-used" not in global_config(own_home)


def test_credential_named_but_missing_says_how_to_set_it(zenodo, own_home, tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"},
                 minimal_config(zenodo.zenodo_url))
    run = datalad_cli(["zenodo-sync", "--credential", "nosuch"], root, own_home)
    assert run.returncode != 0
    assert "no credential 'nosuch'" in run.stdout + run.stderr
    assert "DATALAD_CREDENTIAL_NOSUCH_SECRET" in run.stdout + run.stderr
    assert stats(zenodo)["requests"] == 0


# -- access: an embargo ----------------------------------------------------------------------
def embargo_config(endpoint, embargo: str, files="restricted"):
    return minimal_config(endpoint) + f"access:\n  files: {files}\n  embargo:\n{embargo}"


def test_embargo_is_checked_before_anything_is_sent(zenodo, tmp_path):
    config = embargo_config(zenodo.zenodo_url, "    until: 2020-01-01\n", files="public")
    ds = make_dataset(tmp_path / "ds", {"data.csv": "1\n", "notes.txt": "n\n"}, config)
    results = sync(ds, dry_run=True)
    assert [r["status"] for r in results] == ["impossible"]
    problems = results[0]["problems"]
    assert any(p.startswith("access.embargo.until: 2020-01-01 is not in the future")
               for p in problems)
    assert any(p.startswith("access.embargo.reason: required") for p in problems)
    assert "access.files: an active embargo needs files: restricted" in problems
    assert stats(zenodo)["requests"] == 0


def test_embargo_is_sent_kept_and_published(with_credential, tmp_path):
    sb = with_credential
    until = (dt.date.today() + dt.timedelta(days=400)).isoformat()
    config = embargo_config(sb.zenodo_url, f"    until: {until}\n"
                                           "    reason: 'Until the article is out'\n")
    root = tmp_path / "ds"
    ds = make_dataset(root, {"data.csv": "1\n", "notes.txt": "n\n"}, config)
    ok(sync(ds, publish=True))
    access = api(sb, "GET", f"/records/{record_id(root)}").json()["access"]
    assert access["files"] == "restricted" and access["status"] == "embargoed"
    assert access["embargo"] == {"active": True, "until": until,
                                 "reason": "Until the article is out"}
    sb.zenodo.stats.reset()
    ok(sync(ds))  # what Zenodo keeps is what the config says: nothing to change
    assert stats(sb)["changing"] == 0


# -- the client: Zenodo's answers read once, refusals by kind --------------------------------
def test_client_reads_records_and_names_refusals(zenodo, tmp_path):
    from datalad_rdr.zenodo.client import Forbidden, Locked, NotFound, Zenodo

    client = Zenodo(zenodo.zenodo_url, zenodo.zenodo_settings.token)
    body = {"metadata": {"title": "Client test", "resource_type": {"id": "dataset"},
                         "publisher": "Zenodo",
                         "publication_date": "2026-01-01",
                         "creators": [{"person_or_org": {"type": "personal",
                                                         "family_name": "Doe"}}]},
            "files": {"enabled": True}}
    draft = client.create_draft(body)
    assert not draft.is_published and draft.files == {} and draft.version_index == 1
    (tmp_path / "a.txt").write_bytes(b"abc")
    client.init_files(draft.id, ["a.txt"])
    client.init_files(draft.id, ["a.txt"])  # a retried announcement is no error
    committed, sent = client.upload(draft.id, "a.txt", str(tmp_path / "a.txt"), 3)
    assert committed.md5 == sent == hashlib.md5(b"abc").hexdigest() and committed.size == 3
    record = client.publish(draft.id)
    assert record.is_published and record.doi and record.concept_doi
    assert record.files["a.txt"].md5 == committed.md5
    assert client.token_accepted and client.changed

    assert client.draft(record.id) is None  # published, not being edited
    with pytest.raises(NotFound):
        client.record("999999999")
    client.edit(record.id)
    client.init_files(record.id, ["b.txt"])
    with pytest.raises(Locked):  # a published version's files cannot change
        client.upload(record.id, "b.txt", str(tmp_path / "a.txt"), 3)

    stranger = Zenodo(zenodo.zenodo_url, "not-a-token")
    with pytest.raises(Forbidden, match="Permission denied"):
        stranger.draft(record.id)
    assert stranger.record(record.id).id == record.id  # public: proves nothing
    assert not stranger.token_accepted
