"""Pre-flight checks of `datalad rdr-export`, on datasets that have the guide's common errors."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import datalad.api as dl
import pytest

from conftest import DV, rdr_export
from datalad_rdr.demo import make_bids_dataset

IMAGE = 60_000
CAP = 7 * IMAGE
VALIDATOR = shutil.which("bids-validator-deno") or next(
    (p for p in (os.environ.get("BIDS_VALIDATOR_DENO"),) if p and os.path.exists(p)), None)


@pytest.fixture
def no_validator(monkeypatch):
    """Our own checks only: the environment's PATH without bids-validator-deno."""
    if shutil.which("bids-validator-deno"):
        where = os.path.dirname(shutil.which("bids-validator-deno"))
        monkeypatch.setenv("PATH", os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if p != where))
        if shutil.which("bids-validator-deno"):
            pytest.skip("bids-validator-deno is installed next to git-annex")


def export(ds, sb, **kw):
    kw.setdefault("max_bundle_size", CAP)
    return rdr_export(ds, sb, **kw)


def save(ds, message="change"):
    dl.save(dataset=str(ds), message=message, result_renderer="disabled")


def write(ds, rel, text):
    path = Path(ds) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)


def preflight(results):
    return [r for r in results if r["action"] == "rdr-preflight"]


def errors(results):
    return [r for r in results if r["status"] == "error"]


# Each problem: how to make it, the code the guide (and the validator) name it by, and a
# phrase of the message.
PROBLEMS = {
    "README_FILE_MISSING": (lambda ds: (Path(ds) / "README").unlink(), "no README"),
    "README_FILE_EMPTY": (lambda ds: write(ds, "README", "  \n"), "README is empty"),
    "JSON_INVALID": (lambda ds: write(ds, "task-rest_bold.json",
                                      '{"TaskName": "rest", "RepetitionTime": 2.0,}'),
                     "task-rest_bold.json"),
    "SIDECAR_KEY_REQUIRED": (lambda ds: write(ds, "task-nback_bold.json",
                                              '{"RepetitionTime": 2.0}'),
                             "TaskName is not set for 2 bold file(s)"),
    "PARTICIPANT_ID_MISMATCH": (lambda ds: write(ds, "participants.tsv",
                                                 "participant_id\tage\nsub-01\t21\n"
                                                 "sub-09\t29\n"),
                                "folders without a participants.tsv row: sub-02; "
                                "participants.tsv rows without a folder: sub-09"),
    "JSON_KEY_REQUIRED": (lambda ds: write(ds, "dataset_description.json",
                                           '{"Name": "x"}'),
                          'lacks BIDSVersion; add "BIDSVersion": "1.9.0"'),
}


@pytest.mark.parametrize("code", sorted(PROBLEMS))
def test_each_preflight_error_is_caught_by_name_and_nothing_is_uploaded(
        token_env, tmp_path, no_validator, code):
    sb = token_env
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    make, phrase = PROBLEMS[code]
    make(ds)
    save(ds)
    before = len(sb.dataverse.requests)
    results = export(ds, sb)
    found = [r for r in errors(results) if r["action"] == "rdr-preflight"]
    assert len(found) == 1, results
    assert found[0]["code"] == code
    assert found[0]["message"].startswith(code) and phrase in found[0]["message"]
    assert "nothing was uploaded" in found[0]["message"]
    assert "\n" not in found[0]["message"]
    # besides, only the metadata file's description, which defaults to the README's text
    assert all(r in found or "'description' is missing" in r["message"]
               for r in errors(results))
    # nothing else happened: no bundle result, no server call, no byte sent, no manifest
    assert not any("bundle" in r for r in results)
    assert len(sb.dataverse.requests) == before
    assert sb.dataverse.datasets == {}
    assert sb.gate.stats.bytes_received == 0
    assert not (ds / ".datalad/rdr/manifest.json").exists()


def test_a_clean_dataset_passes_and_the_dry_run_shows_the_checks(sandbox, tmp_path,
                                                                  no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    results = export(ds, sandbox, dry_run=True)
    checks = preflight(results)
    assert [(r["status"], r["message"]) for r in checks] == [
        ("ok", "pre-flight passed: README, BIDS essentials")]
    assert [r["bundle"] for r in results if "bundle" in r] == ["core.zip", "raw.zip"]


def test_taskname_is_resolved_through_the_inheritance_principle(sandbox, tmp_path,
                                                                 no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    # no TaskName at the top for nback; subject-level sidecars give it for sub-01 only,
    # and a sidecar of another task does not apply to sub-02's nback run
    write(ds, "task-nback_bold.json", '{"RepetitionTime": 2.0}')
    write(ds, "sub-01/func/sub-01_task-nback_bold.json", '{"TaskName": "nback"}')
    write(ds, "sub-02/sub-02_task-rest_bold.json", '{"TaskName": "nback"}')
    save(ds)
    found = errors(export(ds, sandbox, dry_run=True))
    assert [r["code"] for r in found] == ["SIDECAR_KEY_REQUIRED"]
    assert found[0]["paths"] == ["sub-02/func/sub-02_task-nback_bold.nii.gz"]
    # the subject level applies to every run below it
    write(ds, "sub-02/sub-02_task-nback_bold.json", '{"TaskName": "nback"}')
    save(ds)
    assert errors(export(ds, sandbox, dry_run=True)) == []


def test_the_exported_commit_is_checked_not_the_working_tree(sandbox, tmp_path,
                                                              no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    write(ds, "task-rest_bold.json", '{"TaskName": "rest",}')
    save(ds, "broken sidecar")
    write(ds, "task-rest_bold.json", '{"TaskName": "rest"}')
    save(ds, "fixed sidecar")
    assert errors(export(ds, sandbox, dry_run=True)) == []
    old = errors(export(ds, sandbox, dry_run=True, commit="HEAD~1"))
    assert [r["code"] for r in old] == ["JSON_INVALID"]
    # and a broken working tree does not matter for the pre-flight of a commit (the dry run
    # names the unsaved file: the real export of HEAD would stop on it)
    write(ds, "participants.tsv", "participant_id\nsub-77\n")
    results = export(ds, sandbox, dry_run=True)
    assert errors(preflight(results)) == []
    assert ["unsaved changes (participants.tsv)" in r["message"] for r in errors(results)] \
        == [True]


def test_annexed_sidecars_are_read_from_the_annex_or_reported_unchecked(sandbox, tmp_path,
                                                                         no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE,
                           annex_text=True)
    assert (ds / "task-rest_bold.json").is_symlink()  # annexed
    write(ds, "task-rest_bold.json", '{"TaskName": "rest",,}')
    save(ds)
    found = errors(export(ds, sandbox, dry_run=True))
    assert [r["code"] for r in found] == ["JSON_INVALID"]
    # a clone without the content: the sidecars cannot be read; said, not blocking
    clone = dl.clone(source=str(ds), path=str(tmp_path / "clone"),
                     result_renderer="disabled")
    results = export(clone.path, sandbox, dry_run=True)
    notice = [r for r in preflight(results) if r.get("code") == "NOT_CHECKED"]
    assert notice and notice[0]["status"] == "ok" and "datalad get" in notice[0]["message"]
    assert errors(results) == []


def test_an_override_goes_on_and_is_recorded_in_the_manifest(token_env, tmp_path,
                                                            no_validator):
    sb = token_env
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    write(ds, "task-rest_bold.json", '{"TaskName": "rest",}')
    save(ds)
    pid = DV(sb).create_dataset()
    results = export(ds, sb, pid=pid, ignore_preflight="JSON_INVALID")
    assert errors(results) == [], results
    override = [r for r in preflight(results) if r.get("code") == "JSON_INVALID"]
    assert override[0]["status"] == "ok"
    assert override[0]["message"].startswith("JSON_INVALID overridden by --ignore-preflight")
    manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
    assert [(o["code"], o["paths"]) for o in manifest["preflight_overrides"]] == [
        ("JSON_INVALID", ["task-rest_bold.json"])]
    # another code does not override it
    write(ds, "README", "")
    save(ds)
    again = export(ds, sb, ignore_preflight=["JSON_INVALID"])
    assert [r["code"] for r in errors(preflight(again))] == ["README_FILE_EMPTY"]


def test_a_dataset_over_50_gb_is_told_about_the_large_dataset_form(sandbox, tmp_path,
                                                                   no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    # three 19 GB images, by their annex keys (no content needed to plan them)
    for i in range(3):
        key = f"MD5E-s19000000000--{i:032x}.nii.gz"
        link = ds / f"sub-0{i % 2 + 1}/anat/sub-0{i % 2 + 1}_run-{i}_T2w.nii.gz"
        link.symlink_to(os.path.relpath(ds / ".git/annex/objects/aa/bb" / key / key,
                                        link.parent))
    subprocess.run(["git", "-C", str(ds), "add", "."], check=True, capture_output=True)
    subprocess.run(["git", "-C", str(ds), "commit", "-qm", "large"], check=True)
    results = export(ds, sandbox, dry_run=True, max_bundle_size=20 * 10**9)
    notice = [r for r in preflight(results) if r.get("code") == "LARGE_DATASET"]
    assert len(notice) == 1 and notice[0]["status"] == "ok"
    assert "57.0 GB, over 50 GB" in notice[0]["message"]
    assert "rdm@kuleuven.be" in notice[0]["message"]
    assert errors(preflight(results)) == []  # (the keys' content is nowhere: said apart)
    small = make_bids_dataset(tmp_path / "small", subjects=1, nifti_bytes=IMAGE)
    assert not [r for r in export(small, sandbox, dry_run=True)
                if r.get("code") == "LARGE_DATASET"]


def test_listed_documentation_must_be_in_the_commit(sandbox, tmp_path, no_validator):
    from datalad_rdr import preflight as pf
    from datalad_rdr.plan import make_plan

    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE)
    write(ds, "docs/index.html", "<h1>Data descriptor</h1>\n")
    save(ds)
    plan = make_plan(ds, "HEAD", CAP)
    assert pf.check(ds, plan, ["docs/index.html"], validator=False) == []
    issues = pf.check(ds, plan, ["docs/missing.html"], validator=False)
    assert [(i.code, i.paths) for i in issues] == [("DOCUMENT_MISSING",
                                                    ["docs/missing.html"])]


def test_a_corrupt_annexed_file_stops_its_bundle_and_is_never_registered(
        token_env, tmp_path, no_validator):
    sb = token_env
    ds = make_bids_dataset(tmp_path / "bids", subjects=3, nifti_bytes=IMAGE,
                           derivatives={"fmriprep": IMAGE})
    rel = "sub-03/func/sub-03_task-rest_bold.nii.gz"  # in raw-02.zip
    obj = (ds / rel).resolve()
    os.chmod(obj.parent, 0o755)
    os.chmod(obj, 0o644)
    data = bytearray(obj.read_bytes())
    data[IMAGE // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    pid = DV(sb).create_dataset()
    results = export(ds, sb, pid=pid)
    bad = [r for r in errors(results) if r.get("bundle") == "raw-02.zip"]
    assert len(bad) == 1 and rel in bad[0]["message"], results
    assert "does not match" in bad[0]["message"] and "git annex fsck" in bad[0]["message"]
    assert "export incomplete" in errors(results)[-1]["message"]
    labels = [f["label"] for f in DV(sb).files(pid)]
    assert "raw-02.zip" not in labels
    assert not (ds / ".datalad/rdr/manifest.json").exists()
    # nor is an object of it left in the store: every stored object is a registered file
    # (a dry run of cleanStorage lists what it would delete: nothing)
    from datalad_rdr.dataverse import Dataverse
    assert Dataverse(sb.dataverse_url, sb.api_token).clean_storage(pid, dry_run=True) \
        ["deleted"] == []


@pytest.mark.skipif(VALIDATOR is None, reason="bids-validator-deno is not installed "
                                              "(pip install bids-validator-deno)")
def test_bids_validator_errors_are_reported_under_its_codes(sandbox, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"  # the validator alone, not the rest of its environment
    bin_dir.mkdir()
    (bin_dir / "bids-validator-deno").symlink_to(VALIDATOR)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    ds = make_bids_dataset(tmp_path / "bids", subjects=2, nifti_bytes=IMAGE)
    write(ds, "task-rest_bold.json", '{"TaskName": "rest",}')
    save(ds)
    results = export(ds, sandbox, dry_run=True)
    found = {r["code"]: r for r in errors(results)}
    # ours, named as the validator names it, and not twice
    assert found["JSON_INVALID"]["source"] == "datalad-rdr"
    assert [r["code"] for r in errors(results)].count("JSON_INVALID") == 1
    # the validator's own: the demo's images are random bytes, not NIfTI
    nifti = found["NIFTI_HEADER_UNREADABLE"]
    assert nifti["source"] == "bids-validator-deno"
    assert "sub-01/anat/sub-01_T1w.nii.gz" in nifti["paths"]
    assert "\n" not in nifti["message"]


def test_all_overrides_every_error_and_notices_need_no_override():
    from datalad_rdr.preflight import Issue, report

    issues = [Issue("JSON_INVALID", "a.json does not parse", ["a.json"]),
              Issue("NIFTI_HEADER_UNREADABLE", "bids-validator-deno: ...", ["b.nii.gz"],
                    source="bids-validator-deno"),
              Issue("LARGE_DATASET", "over 50 GB", blocking=False)]
    results, overrides, blocked = report(Path("/ds"), issues, ["all"], "README")
    assert not blocked
    assert [o["code"] for o in overrides] == ["JSON_INVALID", "NIFTI_HEADER_UNREADABLE"]
    assert [r["status"] for r in results] == ["ok"] * 4
    assert results[-1]["message"] == "pre-flight passed: README (2 overridden)"
    results, overrides, blocked = report(Path("/ds"), issues, ["json_invalid"], "README")
    assert blocked and [o["code"] for o in overrides] == ["JSON_INVALID"]
    assert [r["code"] for r in results if r["status"] == "error"] == [
        "NIFTI_HEADER_UNREADABLE"]


def test_a_missing_name_gets_its_own_example(sandbox, tmp_path, no_validator):
    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE)
    write(ds, "dataset_description.json", '{"BIDSVersion": "1.9.0"}')
    save(ds)
    found = errors(export(ds, sandbox, dry_run=True))
    assert [r["code"] for r in found] == ["JSON_KEY_REQUIRED"]
    assert 'lacks Name; add "Name": "<the dataset\'s title>"' in found[0]["message"]
    assert "BIDSVersion" not in found[0]["message"]


def test_names_and_symlinks_are_checked_in_the_exported_commit(tmp_path, no_validator):
    from datalad_rdr import preflight as pf
    from datalad_rdr.plan import make_plan

    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE)
    write(ds, "stimuli/a|b.txt", "x\n")
    (ds / "stimuli/gone").symlink_to("nothing")
    save(ds)
    issues = pf.check(ds, make_plan(ds, "HEAD", CAP), validator=False)
    assert [(i.code, i.paths, i.blocking, i.overridable) for i in issues] == [
        ("NAME_NOT_PORTABLE", ["stimuli/a|b.txt"], True, True),
        ("SYMLINK_UNRESOLVED", ["stimuli/gone"], True, True)]
    # the commit before has neither
    assert pf.check(ds, make_plan(ds, "HEAD~1", CAP), validator=False) == []


def test_a_document_over_the_servers_largest_file_is_refused_a_bundled_file_is_not(
        tmp_path, no_validator):
    # a data file over the limit goes up in split volumes (tests/test_volumes.py); the README
    # and documentation go up as themselves, so no volume can help them
    from datalad_rdr import preflight as pf
    from datalad_rdr.plan import make_plan

    ds = make_bids_dataset(tmp_path / "bids", subjects=1, nifti_bytes=IMAGE)
    write(ds, "docs/descriptor.html", "<p>" + "x" * 5000 + "</p>\n")
    save(ds)
    plan = make_plan(ds, "HEAD", CAP)
    assert pf.check(ds, plan, ["docs/descriptor.html"], validator=False,
                    largest=IMAGE - 1) == []  # the images are over it: they are bundled
    [issue] = pf.check(ds, plan, ["docs/descriptor.html"], validator=False, largest=4000)
    assert (issue.code, issue.paths, issue.overridable) == (
        "DOCUMENT_TOO_LARGE", ["docs/descriptor.html"], False)
    assert issue.message.startswith("docs/descriptor.html (5.01 kB): larger than the "
                                    "largest file the server accepts (4.00 kB)")
    assert pf.check(ds, plan, [], validator=False, largest=4000) == []  # not a document
    assert pf.check(ds, plan, ["docs/descriptor.html"], validator=False) == []  # unknown
    assert "cannot be overridden" in pf.ignore_problem(["DOCUMENT_TOO_LARGE"])


def test_codes_that_cannot_be_overridden_stay_errors_under_all():
    from datalad_rdr.preflight import KNOWN_CODES, NOT_OVERRIDABLE, Issue, report

    assert NOT_OVERRIDABLE <= KNOWN_CODES
    issues = [Issue("NAME_BACKSLASH", "a\\b does not", ["a\\b"]),
              Issue("NAME_NOT_PORTABLE", "c:d", ["c:d"])]
    results, overrides, blocked = report(Path("/ds"), issues, ["all"], "README")
    assert blocked and [o["code"] for o in overrides] == ["NAME_NOT_PORTABLE"]
    refused = [r for r in results if r["status"] == "error"]
    assert [r["code"] for r in refused] == ["NAME_BACKSLASH"]
    assert "cannot be overridden" in refused[0]["message"]
