"""``rdr-export --slurm`` in the submitting process: plan, open the draft, submit the array
and the final job, then wait for them and report each task and the final job's results."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from datalad.log import log_progress

from .. import export as ex, gitannex, manifest as mf, send
from ..credentials import CredentialError
from ..dataverse import Dataverse, DataverseError
from ..dataverse_records import find
from ..register import file_budget
from ..sizes import human
from .slurm import FINISHED, SlurmError, SlurmOptions, cancel, check_sbatch, job_states, \
    sbatch, task_state
from .submission import (Submission, TaskOutcome, describe_failure, no_result, submissions,
                         tail, task_outcome, write_submission)

log = logging.getLogger("datalad.rdr.cluster")

POLL = 1.0  # seconds between looks at the jobs while waiting


# -- submit ---------------------------------------------------------------------------

def run_slurm_export(dataset: Path, opts: ex.ExportOptions, slurm: SlurmOptions
                     ) -> Iterator[dict]:
    """``rdr-export --slurm``: plan, open the draft, submit the jobs; then wait for them
    unless ``--no-wait``. Result records carry ``slurm_array`` and ``slurm_final``."""
    dataset = Path(dataset)
    try:
        with mf.ExportLock(gitannex.git_dir(dataset), opts.wait):
            sub = yield from _submit(dataset, opts, slurm)
    except mf.ExportBusy as exc:
        yield ex.result(dataset, "error", f"another rdr-export of this dataset is still "
                                          f"running (process {exc}); nothing was submitted: "
                                          f"rerun when it has finished")
        return
    if sub is None or not slurm.wait:
        return
    # the lock is free now: the final job takes it
    try:
        yield from _wait(dataset, sub)
    except KeyboardInterrupt:
        yield ex.result(dataset, "impossible",
                        f"stopped waiting; the jobs {_job_list(sub)} go on: 'datalad "
                        f"rdr-export' afterwards shows the result",
                        **_ids(sub))


def _ids(sub: Submission) -> dict:
    return {"slurm_array": sub.array, "slurm_final": sub.data.get("final"),
            "slurm_dir": str(sub.run)}


def _job_list(sub: Submission) -> str:
    return ", ".join(j for j in (sub.array, sub.data.get("final")) if j)


def _submit(dataset: Path, opts: ex.ExportOptions, slurm: SlurmOptions):
    git_dir = gitannex.git_dir(dataset)
    if slurm.sbatch is None:  # a rerun goes where the last submission went
        last = next(iter(submissions(git_dir)), None)
        slurm = replace(slurm, sbatch=list(last.data.get("sbatch", [])) if last else [])
        if slurm.sbatch:
            yield ex.result(dataset, "ok", f"sbatch options of the last submission: "
                                           f"{shlex.join(slurm.sbatch)}")
    try:
        check_sbatch(slurm.sbatch)  # before the draft is made: a typo costs nothing
    except SlurmError as exc:
        yield ex.result(dataset, "error", str(exc))
        return None
    prepared = yield from ex.prepare(dataset, opts)
    if prepared is None:
        return None
    opts, plan, meta, previous, _, _ = prepared
    try:
        token = opts.token if opts.token or opts.token_for is None \
            else opts.token_for(opts.url)
    except CredentialError as exc:
        yield ex.result(dataset, "error", str(exc), exc)
        return None
    client = Dataverse(opts.url, token)
    pid = yield from ex.open_draft(dataset, opts, client, meta, plan)
    if pid is None:
        return None
    opts = replace(opts, pid=pid)
    if previous and (previous.server, previous.pid) != (opts.url, pid):
        previous = None
    journal = mf.Journal(git_dir, opts.url, pid, ex.settings_of(opts))
    journal.start()
    try:
        listing = send._listing(client, pid)
    except DataverseError as exc:
        yield ex.result(dataset, "error", ex._explain(exc, opts), exc)
        return None
    todo, adding = [], 0
    for bundle in plan.bundles:
        if bundle.volume_size:
            continue  # one upload per split volume: the final job's send loop sends it
        fp = send.fingerprint(bundle)
        known = journal.bundles.get(bundle.name) or (previous and previous.bundle(bundle.name))
        if known and known.fingerprint == fp:
            entry = find(listing, bundle.filename)
            if entry and entry.file_id == known.file_id:
                continue
        adding += 1
        outcome = task_outcome(git_dir, bundle.name, fp, opts.url, pid)
        if outcome and outcome.state == "busy":
            yield ex.result(dataset / bundle.filename, "error",
                            f"{bundle.filename}: SLURM task {outcome.job} is still sending "
                            f"it ({outcome.why}); nothing was submitted: rerun when it has "
                            f"ended, or 'scancel {outcome.job}' first", bundle=bundle.filename)
            return None
        if outcome and outcome.state == "sent":
            continue  # uploaded by an earlier task: the final job registers it
        todo.append((bundle, fp))
    if adding:
        try:
            budget = file_budget(client, pid, adding, collection=opts.collection)
        except DataverseError as exc:
            yield ex.result(dataset, "error", ex._explain(exc, opts), exc)
            return None
        if not budget.fits:
            yield ex.result(dataset, "error", budget.message(pid))
            return None
    sub = write_submission(dataset, git_dir, opts, plan, todo, slurm)
    try:
        if todo:
            sub.data["array"] = sbatch(
                [f"--array=0-{len(todo) - 1}", f"--output={sub.run}/logs/task-%A_%a.log",
                 f"--job-name=rdr-export-{dataset.name}", f"--chdir={dataset}",
                 *slurm.sbatch], sub.run / "task.sh")
        try:
            sub.data["final"] = sbatch(
                [*([f"--dependency=afterany:{sub.array}"] if todo else []),
                 f"--output={sub.run}/logs/final-%j.log",
                 f"--job-name=rdr-export-{dataset.name}-final", f"--chdir={dataset}",
                 *slurm.sbatch], sub.run / "final.sh")
        except SlurmError:
            cancel([sub.array] if sub.array else [], sub.data["clusters"])
            raise
    except SlurmError as exc:
        shutil.rmtree(sub.run, ignore_errors=True)
        yield ex.result(dataset, "error", f"{exc}; nothing was uploaded")
        return None
    sub.save()
    sending = ", ".join(b.filename for b, _ in todo) or "no bundle"
    yield ex.result(
        dataset, "ok",
        (f"submitted SLURM array job {sub.array} ({len(todo)} task(s): {sending}) and "
         f"final job {sub.data['final']} (after any); logs in {sub.run / 'logs'}"
         if todo else f"nothing to send; submitted the final job {sub.data['final']}")
        + ("" if slurm.wait else ": 'datalad rdr-export' afterwards shows the result"),
        pid=pid, **_ids(sub))
    return sub


# -- wait -----------------------------------------------------------------------------

def _wait(dataset: Path, sub: Submission) -> Iterator[dict]:
    clusters = sub.data.get("clusters", [])
    total, reported = len(sub.bundles), set()
    progress_id = f"rdr-export-slurm-{sub.array or sub.data['final']}"
    if total:
        log_progress(log.info, progress_id, f"SLURM array job {sub.array}", total=total,
                     unit=" bundles", label=f"SLURM {sub.array}")
    final_state = None
    while True:
        try:
            tasks = job_states(sub.array, clusters) if sub.array and len(reported) < total \
                else {}
            final_state = job_states(sub.data["final"], clusters).get(None, (None, None))
        except SlurmError as exc:  # a busy controller: look again
            log.warning("%s; asking again in %.0f s", exc, 10 * POLL)
            time.sleep(10 * POLL)
            continue
        final_over = final_state[0] is None or final_state[0] in FINISHED
        for bundle in sub.bundles:
            i = bundle["index"]
            if i in reported:
                continue
            res = yield from _task_result(dataset, sub, bundle, task_state(tasks, i),
                                          final_over)
            if res:
                reported.add(i)
                log_progress(log.info, progress_id, "%d of %d tasks ended",
                             len(reported), total, update=len(reported), increment=False)
        if final_over:
            break
        time.sleep(POLL)
    if total:
        log_progress(log.info, progress_id, f"SLURM array job {sub.array} ended")
    yield from _final_results(dataset, sub, final_state)


def _task_result(dataset, sub: Submission, bundle: dict, state, final_over: bool):
    """Yields the task's result once it has one or has ended; returns whether it did."""
    i, filename = bundle["index"], bundle["filename"]
    where = dict(bundle=filename, slurm_job=sub.task_id(i), log=str(sub.task_log(i)),
                 **_ids(sub))
    result = sub.result(bundle["name"])
    if result is None and sub.result_path(bundle["name"]).with_suffix(".registered").exists():
        result = {"status": "ok", "size": None}
    if result is None and not final_over:
        # a task that ended has written its result, though a shared file system may show
        # it late: one without is told once the final job, which comes after, has ended
        return False
    if result is None and state[0] is not None and state[0] not in FINISHED:
        yield ex.result(dataset / filename, "impossible",
                        f"{filename}: SLURM task {sub.task_id(i)} is still {state[0]}, but "
                        f"the final job {sub.data['final']} has ended: run 'datalad "
                        f"rdr-export' once the task has ended", **where)
        return True
    if result is not None and result.get("status") == "ok":
        size = f", {human(result['size'])}" if result.get("size") else ""
        yield ex.result(dataset / filename, "ok",
                        f"{filename} sent by SLURM task {sub.task_id(i)}{size}", **where)
        return True
    outcome = TaskOutcome(sub, i, "failed", result,
                          f"failed: {result.get('message', '')}" if result else
                          no_result(*state))
    yield ex.result(dataset / filename, "error",
                    f"{filename}: {describe_failure(outcome)}", **where)
    return True


def _final_results(dataset: Path, sub: Submission, state) -> Iterator[dict]:
    final = sub.data["final"]
    where = dict(slurm_job=final, log=str(sub.final_log()), **_ids(sub))
    path = sub.run / "results" / "final.jsonl"
    got = False
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            res = json.loads(line)
        except ValueError:
            continue
        got = True
        yield {**res, **where}
    if not got:
        lines = tail(sub.final_log())
        yield ex.result(dataset, "error",
                        f"the final job {final} ended {state[0] or ''} without results; "
                        f"log {sub.final_log()}"
                        + (":\n  | " + "\n  | ".join(lines) if lines else " (empty)")
                        + "\nrerun 'datalad rdr-export' to register what was sent", **where)
