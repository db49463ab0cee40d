"""The plan and its names: what a researcher's file names, symlinks and folders become."""

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import datalad.api as dl
import pytest
import requests

from conftest import DV, rdr_export
from datalad_rdr import preflight
from datalad_rdr.demo import demo_metadata
from datalad_rdr.plan import PlanError, glob_regex, make_plan
from datalad_rdr.publish import write_citation
from datalad_rdr.sizes import parse_size
from datalad_rdr.zipstream import check_arcname


def make_dataset(path: Path, files: dict[str, str | bytes], metadata=True) -> Path:
    """``datalad create``, the files (text in git), a README and the metadata file, saved."""
    dl.create(str(path), cfg_proc="text2git", result_renderer="disabled")
    files = {"README.md": "# Test\n\nA test dataset.\n", **files}
    if metadata:
        files[".datalad/rdr/metadata.yaml"] = demo_metadata()
    for rel, data in files.items():
        write(path, rel, data)
    save(path)
    return path


def write(ds: Path, rel: str, data: str | bytes) -> None:
    target = ds / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data.encode() if isinstance(data, str) else data)


def link(ds: Path, rel: str, target: str) -> None:
    (ds / rel).parent.mkdir(parents=True, exist_ok=True)
    (ds / rel).symlink_to(target)


def save(ds: Path) -> None:
    dl.save(dataset=str(ds), message="change", result_renderer="disabled")


def commit_with_git(ds: Path) -> None:
    """For names DataLad's own save mishandles (a newline): git can hold them."""
    subprocess.run(["git", "-C", str(ds), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(ds), "commit", "-qm", "odd name"], check=True)


def errors(results):
    return [r for r in results if r["status"] == "error"]


def by_code(results):
    return {r["code"]: r for r in results if r["action"] == "rdr-preflight" and "code" in r}


def planned(results):
    return {r["bundle"]: r["files"] for r in results if "bundle" in r}


def nothing_sent(sb):
    return sb.dataverse.datasets == {} and sb.gate.stats.bytes_received == 0


def downloaded_members(sb, pid) -> dict[str, bytes]:
    """Every member of every bundle on the server, as a recipient unpacking them gets it."""
    dv, members = DV(sb), {}
    for f in dv.files(pid):
        if not f["label"].endswith(".zip"):
            continue
        data = requests.get(f"{dv.url}/api/access/datafile/{f['dataFile']['id']}",
                            headers={"X-Dataverse-key": dv.token}).content
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
            members.update((name, zf.read(name)) for name in zf.namelist())
    return members


# -- names ----------------------------------------------------------------------------

def test_a_newline_in_a_name_is_refused_by_name_not_a_crash(sandbox, tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/notes.txt": "notes\n"})
    write(ds, "data/new\nline.bin", os.urandom(100))
    commit_with_git(ds)
    plan = make_plan(ds)  # the '**' rule takes the name like any other
    assert "data/new\nline.bin" in [f.path for b in plan.bundles for f in b.files]
    results = rdr_export(ds, sandbox, dry_run=True)
    found = [r for r in errors(results) if r["action"] == "rdr-preflight"]
    assert [r["code"] for r in found] == ["NAME_CONTROL_CHARACTER"], results
    assert "data/new\\nline.bin" in found[0]["message"]
    assert "\n" not in found[0]["message"] and "\n" not in found[0]["path"]
    assert found[0]["paths"] == ["data/new\nline.bin"]
    # 'all' does not cover it: a ZIP cannot hold the name right
    again = errors(rdr_export(ds, sandbox, dry_run=True, ignore_preflight="all"))
    assert [r["code"] for r in again] == ["NAME_CONTROL_CHARACTER"]
    assert "cannot be overridden" in again[0]["message"]


def test_globs_match_names_with_a_newline():
    assert glob_regex("**").fullmatch("a\nb/c")
    assert glob_regex("data/**").fullmatch("data/x\ny")
    assert glob_regex("*.txt").fullmatch("a\nb.txt")
    assert not glob_regex("*.txt").fullmatch("a/b.txt")
    assert glob_regex("a\\*/**").fullmatch("a*/x") and not glob_regex("a\\*/**").fullmatch(
        "ab/x")


def test_zip_layout_refuses_a_control_character_too():
    with pytest.raises(ValueError, match="control character") as failure:
        check_arcname("data/new\nline.bin")
    assert "\n" not in str(failure.value)


def test_a_backslash_is_refused_before_any_draft_or_byte(token_env, tmp_path):
    sb = token_env
    ds = make_dataset(tmp_path / "ds", {"data/notes.txt": "notes\n",
                                        "data/back\\slash.bin": os.urandom(500)})
    results = rdr_export(ds, sb)
    found = errors(results)
    assert [r["code"] for r in found] == ["NAME_BACKSLASH"], results
    assert "data/back\\slash.bin" in found[0]["message"]
    assert "nothing was uploaded" in found[0]["message"]
    assert nothing_sent(sb) and not any("bundle" in r for r in results)
    # naming the code is refused up front, as a ZIP cannot hold the name right
    again = errors(rdr_export(ds, sb, ignore_preflight=["NAME_BACKSLASH"]))
    assert [r["code"] for r in again] == ["IGNORE_REFUSED", "NAME_BACKSLASH"]
    assert "cannot be overridden" in again[0]["message"]
    assert nothing_sent(sb)


AWKWARD = ["data/with space.txt", "data/é.txt", "data/中文.txt", "data/😀.txt",
           "data/-leading.txt", "data/#hash%.txt", "data/" + "n" * 196 + ".txt",
           "data/.hidden"]
NOT_PORTABLE = {"data/a:b.txt": "':'", "data/what?.txt": "'?'", "data/CON.txt":
                "device name CON.txt", "data/aux": "device name aux", "data/dot.": "trailing",
                "data/Notes.txt": "the same name as data/NOTES.txt",
                "data/caf\u00e9.txt": "the same name as data/cafe\u0301.txt"}


def test_names_windows_cannot_extract_block_until_overridden_and_round_trip(
        token_env, tmp_path):
    sb = token_env
    names = AWKWARD + list(NOT_PORTABLE) + ["data/NOTES.txt", "data/cafe\u0301.txt"]
    ds = make_dataset(tmp_path / "ds", {n: f"content of {n}\n" for n in names})
    results = rdr_export(ds, sb)
    found = errors(results)
    assert [r["code"] for r in found] == ["NAME_NOT_PORTABLE"], results
    assert sorted(found[0]["paths"]) == sorted(NOT_PORTABLE)  # the awkward ones are fine
    assert "Windows" in found[0]["message"] and "7 file name(s)" in found[0]["message"]
    for path in found[0]["paths"][:3]:  # the message shows three, each with its rule
        assert f"{path} ({NOT_PORTABLE[path]}" in found[0]["message"]
    assert "--ignore-preflight NAME_NOT_PORTABLE overrides" in found[0]["message"]
    assert nothing_sent(sb)
    done = rdr_export(ds, sb, ignore_preflight="NAME_NOT_PORTABLE")
    assert errors(done) == [], done
    manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
    assert [o["code"] for o in manifest["preflight_overrides"]] == ["NAME_NOT_PORTABLE"]
    members = downloaded_members(sb, manifest["pid"])
    for name in names:
        assert members[name] == f"content of {name}\n".encode()


def test_the_rules_name_the_problem_of_each_file():
    from datalad_rdr.zipstream import name_problems

    assert name_problems("sub-01/anat/sub-01_T1w.nii.gz") == []
    assert name_problems("console.txt") == name_problems("com10") == []
    assert name_problems("x/LPT1.tar.gz") == [("NAME_NOT_PORTABLE", "device name LPT1.tar.gz")]
    assert name_problems("folder /x") == [("NAME_NOT_PORTABLE", "trailing dot or space")]
    assert name_problems("a\tb") == [("NAME_CONTROL_CHARACTER", "\\t")]
    assert name_problems("bad\udcffname") == [("NAME_NOT_UTF8", "\\xff")]
    from datalad_rdr.zipstream import name_clashes

    assert name_clashes(["a/README", "a/readme", "A/b", "a/b", "x"]) == [
        ("a/b", "A/b"), ("a/readme", "a/README")]


# -- symlinks -------------------------------------------------------------------------

def test_symlinks_in_git_are_exported_as_the_files_they_point_to(token_env, tmp_path):
    sb = token_env
    ds = make_dataset(tmp_path / "ds", {"data/notes.txt": "notes\n",
                                        "data/image.bin": os.urandom(3000)})  # annexed
    assert (ds / "data/image.bin").is_symlink()
    link(ds, "data/link-to-notes.txt", "notes.txt")
    link(ds, "data/link-to-readme", "../README.md")
    link(ds, "data/chain", "link-to-notes.txt")  # a link to a link
    link(ds, "other", "data")  # a linked folder, which no bundle can hold ...
    link(ds, "data/through", "../other/notes.txt")  # ... and a link through it
    link(ds, "data/link-to-image", "./image.bin")
    save(ds)
    assert [r["paths"] for r in errors(rdr_export(ds, sb, dry_run=True))] == [["other"]]
    write(ds, ".datalad/rdr/bundles", "other  -\n")
    save(ds)
    results = rdr_export(ds, sb)
    assert errors(results) == [], results
    pid = json.loads((ds / ".datalad/rdr/manifest.json").read_text())["pid"]
    members = downloaded_members(sb, pid)
    notes = b"notes\n"
    assert members["data/link-to-notes.txt"] == members["data/chain"] == notes
    assert members["data/through"] == notes
    assert members["data/link-to-readme"] == (ds / "README.md").read_bytes()
    assert members["data/link-to-image"] == (ds / "data/image.bin").read_bytes()


def test_symlinks_to_nothing_in_the_commit_are_refused_with_their_paths(sandbox, tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/notes.txt": "notes\n"})
    link(ds, "data/outside", "../../elsewhere.txt")
    link(ds, "data/absolute", "/etc/hostname")
    link(ds, "data/dangling", "nothere.txt")
    link(ds, "data/folder", ".")
    link(ds, "data/loop", "loop")
    link(ds, "data/file-as-folder", "notes.txt/x")
    save(ds)
    results = rdr_export(ds, sandbox, dry_run=True)
    found = errors(results)
    assert [r["code"] for r in found] == ["SYMLINK_UNRESOLVED"], results
    message = found[0]["message"]
    assert found[0]["paths"] == ["data/absolute", "data/dangling", "data/file-as-folder",
                                 "data/folder", "data/loop", "data/outside"]
    assert "data/absolute -> /etc/hostname (outside the dataset)" in message
    assert "and 3 more" in message
    plan = make_plan(ds)
    assert plan.links["data/outside"] == ("../../elsewhere.txt", "outside the dataset")
    assert plan.links["data/folder"][1] == "a folder"
    assert plan.links["data/loop"][1] == "a loop of symlinks"
    assert plan.links["data/file-as-folder"][1] == "not in the commit"
    # a '-' rule leaves them out knowingly: no error, the plan lists them as excluded
    write(ds, ".datalad/rdr/bundles", "data/outside  -\ndata/absolute  -\n")
    save(ds)
    plan = make_plan(ds)
    assert "data/outside" in plan.excluded and "data/outside" not in plan.links
    # overriding leaves them out too, and the override is recorded
    done = rdr_export(ds, sandbox, dry_run=True, ignore_preflight="SYMLINK_UNRESOLVED")
    assert errors(done) == []
    assert "overridden" in by_code(done)["SYMLINK_UNRESOLVED"]["message"]


def test_a_symlink_into_a_subdataset_needs_r(sandbox, tmp_path):
    ds = make_dataset(tmp_path / "super", {})
    sub = dl.create(str(ds / "sub"), dataset=str(ds), cfg_proc="text2git",
                    result_renderer="disabled")
    write(Path(sub.path), "results.txt", "results\n")
    link(ds, "results.txt", "sub/results.txt")
    dl.save(dataset=str(ds), recursive=True, result_renderer="disabled")
    flat = make_plan(ds)
    assert flat.links == {"results.txt": ("sub/results.txt",
                                          "in the subdataset sub, exported only with -r")}
    deep = make_plan(ds, recursive=True)
    assert deep.links == {}
    files = {f.path: f for b in deep.bundles for f in b.files}
    assert files["results.txt"].blob == files["sub/results.txt"].blob


# -- bundle names ---------------------------------------------------------------------

def test_every_top_level_folder_gets_its_own_bundle(sandbox, tmp_path):
    folders = ["a b", "a_b", "中文", "é", "images", "_private"]
    ds = make_dataset(tmp_path / "ds", {f"{f}/file.txt": f"{f}\n" for f in folders})
    plan = planned(rdr_export(ds, sandbox, dry_run=True))
    assert plan["a_b.zip"] == ["a_b/file.txt"]  # safe names keep their bundle
    assert plan["images.zip"] == ["images/file.txt"]
    assert plan["private.zip"] == ["_private/file.txt"]  # as before
    assert plan["e.zip"] == ["é/file.txt"]  # transliterated
    others = {b: fs for b, fs in plan.items() if b not in
              ("a_b.zip", "images.zip", "private.zip", "e.zip", "core.zip")}
    assert sorted(fs[0] for fs in others.values()) == ["a b/file.txt", "中文/file.txt"]
    assert plan["core.zip"] == ["README.md"]
    for name in others:
        assert name.startswith(("a_b-", "folder-")) and name.isascii()
    # the same names every time
    assert planned(rdr_export(ds, sandbox, dry_run=True)) == plan


def test_bundle_names_are_distinct_safe_and_stable():
    from datalad_rdr.plan import bundle_names

    names = bundle_names(["a b", "a  b", "a_b", "données", "中文", "日本", "core ", "x*"],
                         taken={"core"})
    assert names["a_b"] == "a_b" and names["données"] == "donnees"
    assert len(set(names.values())) == len(names)
    assert all(n.isascii() and n.replace("-", "").replace("_", "").isalnum()
               for n in names.values())
    assert names["core "].startswith("core-")  # not merged into the top-level files
    assert bundle_names(["a b"]) == {"a b": "a_b"}  # alone, as before
    assert bundle_names(["中文"]) == {"中文": names["中文"]}  # the hash is of the name


# -- what the tool writes itself --------------------------------------------------------

def test_the_citation_file_written_on_publication_changes_no_bundle(token_env, tmp_path):
    sb = token_env
    ds = make_dataset(tmp_path / "ds", {"data/a.bin": os.urandom(2000)})
    first = rdr_export(ds, sb)
    assert errors(first) == [], first
    write_citation(ds, "10.5072/FK2/TEST", "1.0", "2026-12-01")  # as --publish writes it
    save(ds)
    assert "Written by datalad-rdr" in (ds / "CITATION.cff").read_text()
    plan = make_plan(ds)
    assert "CITATION.cff" not in [f.path for b in plan.bundles for f in b.files]
    assert [f.path for f in plan.tool_files] == ["CITATION.cff"]
    again = rdr_export(ds, sb)
    assert errors(again) == [], again
    assert {r["bundle"]: r["status"] for r in again if "bundle" in r} == {
        "core.zip": "notneeded", "data.zip": "notneeded"}


def test_the_citation_file_can_be_published_as_documentation(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/a.txt": "a\n", "CITATION.cff": "cff: 1\n"})
    plan = make_plan(ds)
    assert preflight.check(ds, plan, ["CITATION.cff"], validator=False) == []
    from datalad_rdr import documents

    assert [f.path for f in documents.select(plan, ["CITATION.cff"])] == [
        "README.md", "CITATION.cff"]


# -- plan messages --------------------------------------------------------------------

def test_a_file_over_the_cap_makes_its_bundle_split_volumes(tmp_path):
    # once refused here; now the bundle is one ZIP in volumes of the cap (tests/test_volumes.py)
    ds = make_dataset(tmp_path / "ds", {"d/big.bin": os.urandom(300_000),
                                        "d/small.bin": os.urandom(1000)})
    for cap in (200_000, 300_040):  # over the cap, or under it but not with the headers
        [bundle] = [b for b in make_plan(ds, cap=cap).bundles if b.name == "d"]
        assert bundle.volume_size == cap and len(bundle.files) == 2
    [bundle] = [b for b in make_plan(ds, cap=400_000).bundles if b.name == "d"]
    assert bundle.volume_size is None


def test_an_annex_key_without_size_names_its_file(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/a.txt": "a\n"})
    subprocess.run(["git", "-C", str(ds), "annex", "addurl", "--relaxed", "--file",
                    "data/remote.bin", "http://127.0.0.1:9/remote.bin"],
                   check=True, capture_output=True)
    save(ds)
    with pytest.raises(PlanError, match=r"^the annex key of data/remote\.bin records no "
                                        r"size.*git annex migrate"):
        make_plan(ds)
    # a file left out by a rule does not matter
    write(ds, ".datalad/rdr/bundles", "data/remote.bin  -\n")
    save(ds)
    assert make_plan(ds).excluded == ["data/remote.bin"]


def test_a_commit_that_does_not_exist_is_one_clear_line(tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/a.txt": "a\n"})
    with pytest.raises(PlanError, match="^'deadbeef' is not a commit of the dataset"):
        make_plan(ds, "deadbeef")


def test_a_subdataset_left_out_without_r_is_said(sandbox, tmp_path):
    ds = make_dataset(tmp_path / "super", {})
    sub = dl.create(str(ds / "subds"), dataset=str(ds), result_renderer="disabled")
    write(Path(sub.path), "x.txt", "x\n")
    write(Path(sub.path), "CITATION.cff", "# Written by datalad-rdr on publication\n")
    dl.save(dataset=str(ds), recursive=True, result_renderer="disabled")
    deep = make_plan(ds, recursive=True)  # the subdataset's own citation file: not bundled
    assert [f.path for b in deep.bundles for f in b.files if "subds" in f.path] == [
        "subds/x.txt"]
    assert [f.path for f in deep.tool_files] == ["subds/CITATION.cff"]
    results = rdr_export(ds, sandbox, dry_run=True)
    notice = by_code(results)["SUBDATASET_NOT_EXPORTED"]
    assert notice["status"] == "ok" and notice["paths"] == ["subds"]
    assert "-r" in notice["message"] and errors(results) == []
    assert make_plan(ds).unexported_subdatasets == ["subds"]
    assert "SUBDATASET_NOT_EXPORTED" not in by_code(
        rdr_export(ds, sandbox, dry_run=True, recursive=True))


# -- --ignore-preflight and --max-bundle-size ------------------------------------------

def test_an_unknown_ignore_code_is_refused_with_the_known_ones(sandbox, tmp_path):
    ds = make_dataset(tmp_path / "ds", {"data/a.txt": "a\n"})
    found = errors(rdr_export(ds, sandbox, dry_run=True, ignore_preflight="BOGUS"))
    assert len(found) == 1 and found[0]["code"] == "IGNORE_REFUSED"
    assert "BOGUS: not a pre-flight code" in found[0]["message"]
    assert "JSON_INVALID" in found[0]["message"] and "NAME_BACKSLASH" not in found[0][
        "message"]
    assert errors(rdr_export(ds, sandbox, dry_run=True,
                             ignore_preflight=["json_invalid", "all"])) == []
    assert preflight.ignore_problem(["NIFTI_HEADER_UNREADABLE"], validator=True) is None
    assert "not a pre-flight code" in preflight.ignore_problem(
        ["NIFTI_HEADER_UNREADABLE"], validator=False)


@pytest.mark.parametrize("text, size", [("1MB", 10**6), ("500kB", 500_000),
                                        ("1.5e5", 150_000), ("4GiB", 4 * 2**30),
                                        ("20 GB", 20 * 10**9), (2048, 2048)])
def test_sizes_are_read_with_units(text, size):
    from datalad_rdr.commands.constraints import EnsureParsedSize

    assert parse_size(text) == size == EnsureParsedSize(min=1024)(text)


@pytest.mark.parametrize("text", ["", "garbage", "inf", "1e999", "12XB", "0", "-5"])
def test_a_bad_size_is_one_clear_line(text):
    from datalad_next.constraints import EnsureCommandParameterization
    from datalad_next.constraints.exceptions import ParameterConstraintContext

    from datalad_rdr.commands.constraints import EnsureParsedSize

    check = EnsureCommandParameterization(dict(max_bundle_size=EnsureParsedSize(min=1024)))
    with pytest.raises(Exception) as failure:
        check(dict(max_bundle_size=text))
    errors = list(failure.value.errors.values())
    assert len(errors) == 1 and isinstance(list(failure.value.errors)[0],
                                           ParameterConstraintContext)
    message = errors[0].msg
    assert "\n" not in message
    assert ("not a size" in message and "4GB" in message) or "at least" in message
