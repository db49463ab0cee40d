"""A dataset's whole life on RDR, as a researcher lives it (issue 11).

First export killed with SIGKILL in the middle -> a plain rerun continues in the same draft ->
a rerun with nothing changed changes nothing -> publish -> a rerun sends nothing -> one file
changed replaces one bundle -> publish -> ``git annex copy --to rdr`` of a new file -> verify
and publish stay clean -> a clone through the RIA store gets every file, byte for byte.

Steps 1-4 need this branch only; step 5 on needs CITATION.cff left out of the bundles (branch
``names``) and registration after a publication without a draft (branch ``discovery``).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datalad.api as dl
import requests

from conftest import DV
from datalad_rdr.demo import make_bids_dataset

DATALAD = os.path.join(os.path.dirname(sys.executable), "datalad")
IMAGE = 300_000


def run(ds, *args, env):
    r = subprocess.run([DATALAD, *args], cwd=str(ds), env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, f"datalad {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def export(ds, **kw):
    results = dl.rdr_export(dataset=str(ds), result_renderer="disabled", return_type="list",
                            on_failure="ignore", **kw)
    errors = [r["message"] for r in results if r["status"] == "error"]
    assert not errors, errors
    return results


def sent(results):
    return sorted(r["bundle"] for r in results if "bundle" in r and r["status"] == "ok")


def changing(sb, since):
    return [(m, p) for m, p in sb.dataverse.requests[since:] if m != "GET"]


def has_draft(sb, pid):
    r = requests.get(f"{sb.dataverse_url}/api/datasets/:persistentId/versions/:draft",
                     params={"persistentId": pid}, headers={"X-Dataverse-key": sb.api_token})
    return r.status_code == 200


def head(ds):
    return subprocess.run(["git", "-C", str(ds), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def md5s(ds):
    out = {}
    for path in sorted(Path(ds).rglob("*")):
        rel = path.relative_to(ds).as_posix()
        if path.is_file() and not rel.startswith((".git/", ".datalad/")) \
                and rel not in (".gitattributes", "CITATION.cff"):
            out[rel] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def test_a_dataset_lives_on_rdr_from_first_export_to_clone(make_sandbox, tmp_path,
                                                           monkeypatch):
    sb = make_sandbox("rdr")
    monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
    env = dict(os.environ)
    ds = make_bids_dataset(tmp_path / "bids", subjects=4, nifti_bytes=IMAGE)
    store = f"ria+file://{tmp_path / 'store'}"

    # 1. the first export is killed with SIGKILL after its first bundle
    journal = ds / ".git/datalad-rdr/export-journal.json"
    proc = subprocess.Popen([DATALAD, "rdr-export", "--url", sb.dataverse_url,
                             "--collection", sb.collection, "--max-bundle-size", "1.2MB"],
                            cwd=str(ds), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads(journal.read_text()).get("bundles"):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pid = json.loads(journal.read_text())["pid"]

    # 2. a plain rerun continues in the same draft
    run(ds, "rdr-export", env=env)
    manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
    assert manifest["pid"] == pid and len(sb.dataverse.datasets) == 1

    # 3. nothing changed: no commit, nothing changed on the server
    before, commit = len(sb.dataverse.requests), head(ds)
    run(ds, "rdr-export", env=env)
    assert head(ds) == commit and changing(sb, before) == []

    # 4. publish, 5. a rerun after it sends nothing and opens no draft
    published = export(ds, publish="major")
    assert any(r.get("version") == "1.0" for r in published)
    commit, before = head(ds), len(sb.dataverse.requests)
    assert sent(export(ds)) == []
    assert not has_draft(sb, pid) and head(ds) == commit and changing(sb, before) == []

    # 6. one file changed: only its bundle is replaced; 7. published again
    image = "sub-04/anat/sub-04_T1w.nii.gz"
    (ds / image).unlink()
    (ds / image).write_bytes(os.urandom(IMAGE))
    dl.save(dataset=str(ds), result_renderer="disabled")
    changed = export(ds)
    assert len(sent(changed)) == 1 and sent(changed)[0].startswith("raw-")
    assert any(r.get("version") == "2.0" for r in export(ds, publish="major"))

    # 8. a new file through the rdr remote: verify and publish stay clean
    (ds / "sub-04/anat/sub-04_T2w.nii.gz").write_bytes(os.urandom(5000))
    dl.save(dataset=str(ds), result_renderer="disabled")
    subprocess.run(["git", "-C", str(ds), "annex", "copy", "--to", "rdr",
                    "sub-04/anat/sub-04_T2w.nii.gz"], check=True, capture_output=True)
    export(ds, verify_only=True)
    assert any(r.get("version") == "3.0"
               for r in export(ds, publish="major", ria_store=store, ria_alias="bids"))
    labels = [f["label"] for f in DV(sb).files(pid, ":latest")]
    assert len(labels) == len(set(labels))

    # 9. a clone through the RIA alias gets every file out of RDR, byte for byte
    clone = tmp_path / "clone"
    dl.clone(source=f"{store}#~bids", path=str(clone), result_renderer="disabled")
    got = dl.get(dataset=str(clone), path=str(clone), result_renderer="disabled",
                 return_type="list", on_failure="ignore")
    assert not [r for r in got if r["status"] in ("error", "impossible")], got
    assert md5s(clone) == md5s(ds)
