"""`datalad rdr-export --slurm` on a real SLURM cluster, against the real sandbox.

The jobs run on the cluster's node (CI: the single node of `.ci/slurm start`, this machine),
so they reach the sandbox on loopback, and read the dataset in the tests' temporary
directory. They run the Python that submits them, with git-annex from its environment
(the export writes that into the job scripts); the API token reaches them through the
environment that sbatch passes on. These tests skip where sbatch is absent, and fail in CI.
"""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import datalad.api as dl
import pytest

from conftest import DV, rdr_export
from slurm import FINISHED_STATES, job_states, require_slurm, run, slurm_conf, wait_for
from test_export import IMAGE, export
from datalad_rdr import manifest as mf
from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.sandbox.faults import Fault

# core, raw-01, raw-02, derivatives: four bundles, four tasks
BUNDLES = ["core.zip", "raw-01.zip", "raw-02.zip", "derivatives.zip"]
DATALAD = os.path.join(os.path.dirname(sys.executable), "datalad")


@pytest.fixture
def jobs(monkeypatch):
    """The cluster, its slurm.conf where sbatch looks; the export's jobs are cancelled
    afterwards (list their ids in the returned list, or let ``ids_of`` do it)."""
    require_slurm()
    if slurm_conf():
        monkeypatch.setenv("SLURM_CONF", slurm_conf())
    submitted = []
    yield submitted
    if submitted:
        run("scancel", *submitted, check=False)


@pytest.fixture
def bids(tmp_path):  # as test_export's: capped by its export() into the four BUNDLES
    return make_bids_dataset(tmp_path / "bids", subjects=3, nifti_bytes=IMAGE,
                             derivatives={"fmriprep": IMAGE})


def ids_of(results, jobs):
    """(array job id, final job id, submission dir) of the submission among the results."""
    sub = next(r for r in results if r.get("slurm_final") and "submitted" in r["message"])
    jobs += [j for j in (sub["slurm_array"], sub["slurm_final"]) if j]
    return sub["slurm_array"], sub["slurm_final"], Path(sub["slurm_dir"])


def errors(results):
    return [r for r in results if r["status"] == "error"]


def ended(job, tasks):
    states = job_states(job)
    return states if set(tasks) <= set(states) and all(
        states[t]["JobState"] in FINISHED_STATES for t in tasks) else None


def server_md5s(sb, pid):
    return {f["label"]: f["dataFile"]["md5"] for f in DV(sb).files(pid)}


def history_bytes(results) -> int:
    """Bytes of the history deposit a run sent (it changes with every commit)."""
    return sum(r.get("size", 0) for r in results if r.get("action") == "rdr-export"
               and r.get("path", "").endswith("dataset-history.git.bundle"))


def head(ds):
    return subprocess.run(["git", "-C", str(ds), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def manifest_of(ds):
    return mf.load(Path(ds)).as_dict()


def test_tasks_send_the_bundles_as_slurm_jobs_byte_equal_to_a_local_export(
        jobs, token_env, bids, tmp_path):
    sb = token_env
    clone = Path(dl.clone(source=str(bids), path=str(tmp_path / "clone"),
                          result_renderer="disabled").path)
    image = "sub-01/anat/sub-01_T1w.nii.gz"
    assert not (clone / image).exists()  # the tasks fetch it, and drop it again
    commit = head(clone)
    results = export(clone, sb, slurm=True, drop_after=True)
    assert not errors(results), errors(results)
    array, final, run_dir = ids_of(results, jobs)
    # one array task per bundle, each a SLURM job that ran and left its log
    tasks = job_states(array)
    assert {t: r["JobState"] for t, r in tasks.items()} == {i: "COMPLETED" for i in range(4)}
    sent = [r for r in results if r.get("slurm_job", "").startswith(f"{array}_")]
    assert sorted(r["bundle"] for r in sent) == sorted(BUNDLES)
    for r in sent:
        log = Path(r["log"]).read_text()
        assert f"SLURM task {r['slurm_job']} on " in log and f"sent {r['bundle']}" in log
    # the final job registered them, one by one, and verified
    assert job_states(final)[None]["JobState"] == "COMPLETED"
    registered = [r for r in results if r.get("slurm_job") == final and "bundle" in r]
    assert sorted(r["bundle"] for r in registered) == sorted(BUNDLES)
    said = r".+ registered: sent by SLURM task \d+_\d+, \d+ files, [\d.]+ \w+, file id \d+"
    assert all(re.fullmatch(said, r["message"]) for r in registered)
    assert any(r.get("table") for r in results)  # the verify table, from the final job
    manifest = manifest_of(clone)
    assert manifest["dataset_commit"] == commit
    assert not (clone / image).exists()
    # a local export of the same commit sends the same bytes
    assert head(bids) == commit
    local = export(bids, sb)
    assert not errors(local), errors(local)
    ours, theirs = server_md5s(sb, manifest["pid"]), server_md5s(sb, manifest_of(bids)["pid"])
    assert manifest["pid"] != manifest_of(bids)["pid"]
    assert {b: ours[b] for b in BUNDLES} == {b: theirs[b] for b in BUNDLES}
    assert [b["members"] for b in manifest["bundles"]] == [
        b["members"] for b in manifest_of(bids)["bundles"]]
    # a plain rerun finds everything done: nothing sent, nothing submitted
    sent_bytes = sb.gate.stats.bytes_received
    again = rdr_export(clone, sb, url=None, collection=None, max_bundle_size=None)
    assert not errors(again), errors(again)
    assert sb.gate.stats.bytes_received == sent_bytes
    assert [r["status"] for r in again if "bundle" in r] == ["notneeded"] * 4


def test_a_task_killed_by_scancel_is_sent_again_by_a_rerun(jobs, token_env, bids):
    sb = token_env
    # the first upload hangs: its task is still running when the others are done
    hang = sb.gate.faults.inject(Fault(method="PUT", path=".", delay=120))
    results = export(bids, sb, slurm=True, no_wait=True)
    array, final, run_dir = ids_of(results, jobs)
    wait_for(lambda: hang.hits == 1 and len(list((run_dir / "results").glob("*.json"))) == 3,
             timeout=120, what="three tasks done, one hanging in its upload")
    done = {p.stem for p in (run_dir / "results").glob("*.json")}
    hanging = next(b for b in json.loads((run_dir / "submission.json").read_text())["bundles"]
                   if b["name"] not in done)
    task = f"{array}_{hanging['index']}"
    assert job_states(array)[hanging["index"]]["JobState"] == "RUNNING"
    # a second submission now would send that bundle twice: refused, nothing submitted
    busy = export(bids, sb, slurm=True)
    assert [r["message"] for r in errors(busy)] == [
        f"{hanging['filename']}: SLURM task {task} is still sending it (RUNNING); nothing "
        f"was submitted: rerun when it has ended, or 'scancel {task}' first"]
    assert not [r for r in busy if r.get("slurm_array")]
    # a plain export now registers the three uploads, and leaves that bundle to its task
    plain = rdr_export(bids, sb, url=None, collection=None, max_bundle_size=None)
    assert [r["message"] for r in errors(plain) if r.get("bundle")] == [
        f"{hanging['filename']}: SLURM task {task} is sending it (RUNNING): rerun when it "
        f"has ended, or 'scancel {task}' first"]
    assert len([r for r in plain if "registered: sent by SLURM task" in r["message"]]) == 3
    run("scancel", task)
    states = wait_for(lambda: ended(final, [None]), timeout=120, what=f"final job {final}")
    assert job_states(array)[hanging["index"]]["JobState"] == "CANCELLED"
    assert states[None]["JobState"] == "FAILED"  # it registered three, and said why not four
    said = [json.loads(line) for line in (run_dir / "results/final.jsonl").read_text()
            .splitlines()]
    missing = [r for r in said if r["status"] == "error" and r.get("bundle")]
    assert [r["bundle"] for r in missing] == [hanging["filename"]]
    assert f"SLURM task {task} ended CANCELLED" in missing[0]["message"]
    assert f"task-{task}.log" in missing[0]["message"]
    assert "CANCELLED" in missing[0]["message"].split("| ")[-1]  # the log's last line
    # the rerun submits that bundle alone
    sent_bytes = sb.gate.stats.bytes_received
    again = export(bids, sb, slurm=True)
    assert not errors(again), errors(again)
    array2, final2, _ = ids_of(again, jobs)
    assert set(job_states(array2)) == {0}
    assert [r["bundle"] for r in again if r.get("slurm_job") == f"{array2}_0"] == [
        hanging["filename"]]
    manifest = manifest_of(bids)
    assert sorted(b["filename"] for b in manifest["bundles"]) == sorted(BUNDLES)
    size = next(b["size"] for b in manifest["bundles"] if b["filename"] == hanging["filename"])
    documents = sum(d["size"] for d in manifest["documents"])
    assert sb.gate.stats.bytes_received - sent_bytes <= size + documents + history_bytes(again)


def test_a_failed_task_is_reported_with_its_log_and_only_it_is_resubmitted(
        jobs, token_env, bids):
    sb = token_env
    sb.gate.faults.inject(Fault(method="PUT", path=".", status=400))
    results = export(bids, sb, slurm=True, sbatch="--time=10 --job-name=mine")
    array, final, _ = ids_of(results, jobs)
    assert job_states(array)[0]["TimeLimit"] == "00:10:00"
    assert job_states(array)[0]["JobName"] == "mine"
    failed = [r for r in errors(results) if r.get("slurm_job", "").startswith(f"{array}_")]
    assert len(failed) == 1, errors(results)
    message = failed[0]["message"]
    assert message.startswith(f"{failed[0]['bundle']}: SLURM task {failed[0]['slurm_job']} "
                              f"failed: S3 refused the upload: HTTP 400")
    assert f"log {failed[0]['log']}:" in message
    assert "datalad-rdr: error:" in message  # a line of the task's log
    assert job_states(array)[int(failed[0]["slurm_job"].split("_")[1])]["JobState"] \
        == "FAILED"
    assert any(r["status"] == "error" and r.get("slurm_job") == final
               and "export incomplete" in r["message"] for r in results)
    registered = [r["bundle"] for r in results
                  if r.get("slurm_job") == final and r["status"] == "ok" and "bundle" in r]
    assert sorted(registered + [failed[0]["bundle"]]) == sorted(BUNDLES)
    again = export(bids, sb, slurm=True)  # where the last submission went
    assert not errors(again), errors(again)
    assert any(r["message"] == "sbatch options of the last submission: --time=10 "
                               "--job-name=mine" for r in again)
    array2, _, _ = ids_of(again, jobs)
    assert job_states(array2)[0]["TimeLimit"] == "00:10:00"
    assert [r["bundle"] for r in again if r.get("slurm_job", "").startswith(f"{array2}_")] \
        == [failed[0]["bundle"]]
    assert sorted(b["filename"] for b in manifest_of(bids)["bundles"]) == sorted(BUNDLES)


def test_a_plain_export_after_a_failed_task_sends_that_bundle_from_here(jobs, token_env,
                                                                        bids):
    sb = token_env
    sb.gate.faults.inject(Fault(method="PUT", path=".", status=400))
    results = export(bids, sb, slurm=True, no_wait=True)
    array, final, run_dir = ids_of(results, jobs)
    run("scancel", final)
    wait_for(lambda: ended(array, range(4)), timeout=120, what=f"tasks of {array}")
    failed = [json.loads(p.read_text()) for p in (run_dir / "results").glob("*.json")]
    assert sorted(r["status"] for r in failed) == ["error", "ok", "ok", "ok"]
    again = rdr_export(bids, sb, url=None, collection=None, max_bundle_size=None)
    assert not errors(again), errors(again)
    messages = sorted(r["message"].split(":")[0] for r in again if "bundle" in r)
    assert sum("registered" in m for m in messages) == 3
    assert sum(m.endswith(" sent") for m in messages) == 1, messages  # from here
    assert sorted(b["filename"] for b in manifest_of(bids)["bundles"]) == sorted(BUNDLES)


def test_no_wait_returns_the_job_ids_and_a_plain_rerun_finishes(jobs, token_env, bids):
    sb = token_env
    began = time.monotonic()
    results = export(bids, sb, slurm=True, no_wait=True)
    took = time.monotonic() - began
    assert not errors(results), errors(results)
    array, final, run_dir = ids_of(results, jobs)
    submitted = next(r for r in results if r.get("slurm_array"))
    assert "'datalad rdr-export' afterwards shows the result" in submitted["message"]
    assert not (bids / ".datalad/rdr/manifest.json").exists()
    # the final job is left out here: the plain rerun is what registers the uploads
    run("scancel", final)
    wait_for(lambda: ended(array, range(4)), timeout=120, what=f"tasks of {array}")
    assert {r["JobState"] for r in job_states(array).values()} == {"COMPLETED"}, took
    sent_bytes = sb.gate.stats.bytes_received
    again = rdr_export(bids, sb, url=None, collection=None, max_bundle_size=None)
    assert not errors(again), errors(again)
    registered = [r for r in again if "bundle" in r]
    assert sorted(r["bundle"] for r in registered) == sorted(BUNDLES)
    assert all(f"sent by SLURM task {array}_" in r["message"] for r in registered)
    manifest = manifest_of(bids)
    assert sorted(b["filename"] for b in manifest["bundles"]) == sorted(BUNDLES)
    # the tasks' uploads were not sent again: only the README and the history went out
    documents = sum(d["size"] for d in manifest["documents"])
    assert history_bytes(again) > 0
    assert sb.gate.stats.bytes_received - sent_bytes == documents + history_bytes(again)
    # and they are not taken twice: their results are marked registered
    assert sorted(p.name for p in (run_dir / "results").iterdir()) == sorted(
        f"{b[:-4]}.registered" for b in BUNDLES)


def test_a_bad_sbatch_option_is_one_line_and_nothing_is_uploaded(jobs, token_env, bids):
    sb = token_env
    before = len(sb.dataverse.requests)
    results = export(bids, sb, slurm=True, sbatch="-p nosuchpartition -t 10")
    assert [r["message"] for r in results] == [
        "sbatch refused the options -p nosuchpartition -t 10: invalid partition specified: "
        "nosuchpartition; nothing was submitted or uploaded"]
    assert len(sb.dataverse.requests) == before
    assert sb.gate.stats.requests.total() == 1  # the sandbox's own create_bucket
    assert not (bids / ".git/datalad-rdr/slurm").exists()


@pytest.mark.parametrize("args, said", [
    (["--slurm", "--sbatch=--array=0-3"],
     "--sbatch --array=0-3: the export sets --array itself"),
    (["--slurm", "--sbatch", "-p 'batch"],
     "--sbatch \"-p 'batch\": No closing quotation"),
    (["--sbatch", "-p batch"], "--sbatch only goes with --slurm"),
    (["--sbatch="], "--sbatch only goes with --slurm"),
    (["--no-wait"], "--no-wait only goes with --slurm"),
    (["--slurm", "--dry-run"], "--slurm and --dry-run cannot be used together"),
])
def test_sbatch_options_the_export_cannot_use_are_refused_before_anything_runs(
        token_env, bids, args, said):
    r = subprocess.run([DATALAD, "rdr-export", "-d", str(bids), "--url",
                        token_env.dataverse_url, "--collection", token_env.collection, *args],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert said in r.stderr, r.stderr
    assert len(token_env.dataverse.requests) == 0
    assert not (bids / ".git/datalad-rdr/slurm").exists()


def test_without_sbatch_on_path_slurm_says_so_and_sends_nothing(token_env, bids, tmp_path,
                                                                 monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "git").symlink_to(subprocess.run(["which", "git"], capture_output=True,
                                              text=True).stdout.strip())
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.path.dirname(sys.executable)}")
    results = export(bids, token_env, slurm=True)
    assert [r["message"] for r in results] == [
        "sbatch not found: --slurm needs SLURM's client commands on PATH (run it on a login "
        "node of the cluster)"]
    assert len(token_env.dataverse.requests) == 0


def test_a_final_job_cancelled_while_waiting_is_reported_with_its_log(jobs, token_env,
                                                                      bids):
    sb = token_env
    hang = sb.gate.faults.inject(Fault(method="PUT", path=".", delay=120))
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token}
    proc = subprocess.Popen([DATALAD, "-f", "json", "rdr-export", "-d", str(bids), "--url",
                             sb.dataverse_url, "--collection", sb.collection,
                             "--max-bundle-size", str(7 * IMAGE), "--slurm"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    base = bids / ".git/datalad-rdr/slurm"

    def final_id():
        for path in base.glob("*/submission.json") if base.exists() else []:
            data = json.loads(path.read_text())
            if data.get("final") and hang.hits:
                return data
        return None

    data = wait_for(final_id, timeout=120, what="jobs submitted, an upload hanging")
    jobs += [data["array"], data["final"]]
    run("scancel", data["final"])
    out, _ = proc.communicate(timeout=120)
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    said = [r for r in results if r.get("slurm_job") == data["final"]]
    assert [r["status"] for r in said] == ["error"]
    assert said[0]["message"].startswith(
        f"the final job {data['final']} ended CANCELLED without results; log ")
    assert said[0]["message"].endswith("rerun 'datalad rdr-export' to register what was sent")
    still = [r for r in results if r["status"] == "impossible"]
    assert still and all(f"but the final job {data['final']} has ended" in r["message"]
                         for r in still)


def test_with_publish_the_final_job_publishes_and_keeps_the_doi(jobs, token_env, bids):
    sb = token_env
    results = export(bids, sb, slurm=True, publish="major")
    assert not errors(results), errors(results)
    _, final, _ = ids_of(results, jobs)
    published = [r for r in results if r["action"] == "rdr-publish"]
    assert [r["slurm_job"] for r in published] == [final]
    manifest = manifest_of(bids)
    assert (manifest["doi"], manifest["version"]) == (manifest["pid"][len("doi:"):], "1.0")
    version = DV(sb).call("GET", "/api/datasets/:persistentId/versions/:latest-published",
                          params={"persistentId": manifest["pid"]}).json()["data"]
    assert version["versionState"] == "RELEASED"
    assert sorted(f["label"] for f in DV(sb).files(manifest["pid"], ":latest-published")
                  if f["label"].endswith(".zip")) == sorted(BUNDLES)
    assert manifest["doi"] in (bids / "CITATION.cff").read_text()


def test_a_bundle_in_volumes_is_sent_by_the_final_job_the_others_by_tasks(jobs, token_env,
                                                                          tmp_path):
    sb = token_env
    ds = make_bids_dataset(tmp_path / "big", subjects=2, nifti_bytes=100_000)
    big = ds / "sub-01/anat/sub-01_T1w.nii.gz"
    big.unlink()
    big.write_bytes(os.urandom(2_500_000))
    dl.save(dataset=str(ds), result_renderer="disabled")
    results = rdr_export(ds, sb, slurm=True, max_bundle_size=1_000_000)
    assert not errors(results), errors(results)
    array, final, _ = ids_of(results, jobs)
    by_task = {r["bundle"] for r in results if r.get("slurm_job", "").startswith(f"{array}_")}
    assert by_task and "raw.zip" not in by_task  # the volumes are not a task's upload
    from_final = [r for r in results if r.get("slurm_job") == final
                  and r.get("bundle") == "raw.zip"]
    assert from_final and "volumes" in from_final[0]["message"], from_final
    labels = set(server_md5s(sb, manifest_of(ds)["pid"]))
    assert {"raw.zip.001", "raw.zip.002", "raw.zip.003"} <= labels and "raw.zip" not in labels
    again = rdr_export(ds, sb, url=None, collection=None, max_bundle_size=None)
    assert not errors(again), errors(again)
    assert {r["status"] for r in again if "bundle" in r} == {"notneeded"}
