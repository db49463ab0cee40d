"""Send stage on a SLURM cluster: one array task per bundle, one final job that registers.

``datalad rdr-export --slurm`` plans the export and opens the draft here, as a local export
does, then hands the sending to SLURM:

- a *task description* on the dataset's file system, under
  ``.git/datalad-rdr/slurm/<submission>/``: ``submission.json`` (server, draft, commit, the
  bundles to send and their fingerprints, the job ids) and ``tasks/<index>.json`` (one
  bundle's files);
- ONE array job, a task per bundle still to send: it fetches the content that is not here,
  streams the bundle's ZIP -- the same deterministic bytes a local export sends -- into the
  store through the server's presigned URLs, drops what it fetched when ``--drop-after`` is
  given, and writes its outcome to ``results/<bundle>.json``, a file of its own: tasks on
  several nodes never write one shared file;
- ONE final job, ``--dependency=afterany`` on the array: it runs the normal export, whose send
  loop finds each bundle a task uploaded (:func:`take_upload`) and registers it without
  sending it, one at a time, then writes the manifest, verifies and, if asked, publishes.
  ``afterany``, not ``afterok``: with ``afterok`` one failed task would leave the final job
  pending for ever (``DependencyNeverSatisfied``), the bundles that did arrive unregistered
  and nothing that reports the failure; with ``afterany`` the final job always runs,
  registers what arrived (kept in the journal) and names what did not.

Without ``--no-wait`` the submitting command then waits, shows the array's progress, reports
each task (a failed one with its log and the log's last lines) and the final job's results.
A rerun -- ``--slurm`` or plain -- sends only what is missing: bundles on the server are
unchanged, a task's upload that is not registered yet is registered, and only bundles whose
task failed or left no result are sent again (by a new array, or here).

Job state comes from ``scontrol show job`` and, once a cluster has forgotten a finished job
(``MinJobAge``), from ``sacct`` where accounting runs; a task's own result file is what counts.
Nothing runs but SLURM's client commands (``sbatch``, ``scontrol``, ``sacct``), in the
submitting process and in the jobs; the dataset must be on a file system the nodes share.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

from datalad.log import log_progress

from . import content, export as ex, manifest as mf, send
from .credentials import CredentialError, obtain
from .dataverse import Dataverse, DataverseError
from .plan import Bundle, PlannedFile
from .dataverse_records import find
from .register import file_budget, register_bundle
from .sizes import human
from .upload import Uploaded, Uploader, UploadError
from .zipstream import MemberError, layout_zip

log = logging.getLogger("datalad.rdr.cluster")

# sbatch options the export sets itself: given again they would break the job layout
OWN_OPTIONS = {"-a": "--array", "--array": "--array", "-d": "--dependency",
               "--dependency": "--dependency", "-o": "--output", "--output": "--output",
               "-e": "--error", "--error": "--error", "--wrap": "--wrap",
               "--parsable": "--parsable", "--test-only": "--test-only"}
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}
LOG_LINES = 5  # of a failed job's log, in its result
POLL = 1.0  # seconds between looks at the jobs while waiting

_final_run: Path | None = None  # set in the final job: a bundle whose task failed is not sent


class SlurmError(Exception):
    """sbatch refused a job, or an sbatch option cannot be used: one line for the user."""


class TaskPending(UploadError):
    """A SLURM task is still sending this bundle."""


class TaskFailed(UploadError):
    """The bundle's SLURM task failed; the final job does not send it in its place."""


@dataclass
class SlurmOptions:
    sbatch: list[str] | None = None  # the user's sbatch arguments; None: the last ones
    wait: bool = True  # False: --no-wait
    credential: str | None = None  # --credential, for the jobs


def parse_sbatch(given) -> list[str]:
    """The sbatch arguments of ``--sbatch`` values (each one shell-quoted string)."""
    texts = [given] if isinstance(given, str) else list(given or [])
    args = []
    for text in texts:
        try:
            args += shlex.split(text)
        except ValueError as exc:
            raise SlurmError(f"--sbatch {text!r}: {exc}; quote it as you would on an "
                             f"sbatch command line") from exc
    for arg in args:
        name = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
        if name in OWN_OPTIONS:
            raise SlurmError(f"--sbatch {arg}: the export sets {OWN_OPTIONS[name]} itself "
                             f"(one array task per bundle, then the final job); leave it "
                             f"out")
    return args


def clusters_of(args: list[str]) -> list[str]:
    """``-M``/``--clusters`` of the sbatch arguments, for scontrol and scancel too."""
    for i, arg in enumerate(args):
        if arg in ("-M", "--clusters") and i + 1 < len(args):
            return ["-M", args[i + 1]]
        if arg.startswith("--clusters="):
            return ["-M", arg.split("=", 1)[1]]
        if arg.startswith("-M") and len(arg) > 2:
            return ["-M", arg[2:]]
    return []


def _slurm(*cmd, timeout=60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise SlurmError(f"{cmd[0]} not found: --slurm needs SLURM's client commands on "
                         f"PATH (run it on a login node of the cluster)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{cmd[0]} gave no answer within {timeout} s (is slurmctld "
                         f"up?)") from exc


def _refusal(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "unrecognized" in ln.lower()
              or "invalid" in ln.lower()]
    text = (errors or lines or [f"exit {proc.returncode}"])[0]
    return text.removeprefix("sbatch: ").removeprefix("error: ")


def check_sbatch(args: list[str]) -> None:
    """Refuse options the cluster would refuse, before anything is sent (``--test-only``)."""
    proc = _slurm("sbatch", "--test-only", *args, "--wrap", "true")
    if proc.returncode:
        raise SlurmError(f"sbatch refused the options {shlex.join(args) or '(none)'}: "
                         f"{_refusal(proc)}; nothing was submitted or uploaded")


def sbatch(args: list[str], script: Path) -> str:
    """Submit ``script``; its job id."""
    proc = _slurm("sbatch", "--parsable", *args, str(script))
    if proc.returncode:
        raise SlurmError(f"sbatch refused the job: {_refusal(proc)}")
    return proc.stdout.strip().split(";")[0]  # "id;cluster" on a multi-cluster setup


def job_states(job: str, clusters: list[str] = ()) -> dict:
    """{task: (state, exit code)} of a job; task is the array index (int), None for a plain
    job, or a string (``"2-5"``) for array tasks still pending together. Empty when the
    cluster no longer knows the job."""
    proc = _slurm("scontrol", *clusters, "show", "job", "-o", job)
    states = {}
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            rec = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = rec.get("ArrayTaskId")
            task = None if task is None else int(task) if task.isdigit() else task
            states[task] = (rec.get("JobState", "?"), rec.get("ExitCode", "?"))
        return states
    # forgotten (MinJobAge): the accounting database, where there is one
    proc = _slurm("sacct", *clusters, "-n", "-P", "-X", "-j", job,
                  "-o", "JobID,State,ExitCode")
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        job_id, state, code = (line.split("|") + ["", ""])[:3]
        task = job_id.partition("_")[2]
        states[int(task) if task.isdigit() else None if not task else task] = (
            state.split()[0] if state else "?", code)
    return states


def task_state(states: dict, index: int) -> tuple[str | None, str | None]:
    """(state, exit code) of one array task in :func:`job_states`; a task still pending
    with others is shown in a range (``0-3%2``, ``1,4-5``)."""
    if index in states:
        return states[index]
    for spec, state in states.items():
        if isinstance(spec, str) and any(
                _in(part, index) for part in spec.split("%")[0].split(",")):
            return state
    return None, None


def _in(part: str, index: int) -> bool:
    first, _, last = part.partition("-")
    last = last or first
    return first.isdigit() and last.isdigit() and int(first) <= index <= int(last)


def cancel(jobs: list[str], clusters: list[str] = ()) -> None:
    if jobs:
        _slurm("scancel", *clusters, *jobs)


def tail(path: Path, n: int = LOG_LINES) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln for ln in lines if ln.strip()][-n:]


# -- the task description -------------------------------------------------------------

def slurm_dir(git_dir: Path) -> Path:
    return Path(git_dir) / "datalad-rdr" / "slurm"


class Submission:
    """One ``--slurm`` submission: its directory and ``submission.json``."""

    def __init__(self, run: Path, data: dict | None = None):
        self.run = Path(run)
        self.data = data if data is not None else json.loads(
            (self.run / "submission.json").read_text())

    def save(self) -> None:
        mf._atomic_write(self.run / "submission.json", json.dumps(self.data, indent=1))

    @property
    def bundles(self) -> list[dict]:
        return self.data["bundles"]

    @property
    def array(self) -> str | None:
        return self.data.get("array")

    def task_id(self, index: int) -> str:
        return f"{self.array}_{index}"

    def result_path(self, name: str) -> Path:
        return self.run / "results" / f"{name}.json"

    def result(self, name: str) -> dict | None:
        try:
            return json.loads(self.result_path(name).read_text())
        except (OSError, ValueError):
            return None

    def task_log(self, index: int) -> Path:
        return self.run / "logs" / f"task-{self.array}_{index}.log"

    def final_log(self) -> Path:
        return self.run / "logs" / f"final-{self.data.get('final')}.log"


def submissions(git_dir: Path) -> list[Submission]:
    """Every submission of the dataset, newest first."""
    base = slurm_dir(git_dir)
    found = []
    for run in sorted(base.iterdir(), reverse=True) if base.is_dir() else []:
        try:
            found.append(Submission(run))
        except (OSError, ValueError):
            continue  # a submission that never got written
    return found


@dataclass
class TaskOutcome:
    submission: Submission
    index: int
    state: str  # "sent", "failed", "busy"
    result: dict | None
    why: str = ""  # for "failed" and "busy": the job's state, the log

    @property
    def job(self) -> str:
        return self.submission.task_id(self.index)

    @property
    def log_path(self) -> Path:
        return self.submission.task_log(self.index)


def task_outcome(git_dir: Path, name: str, fingerprint: str, server: str, pid: str
                 ) -> TaskOutcome | None:
    """What the newest SLURM task for this bundle and content did, if one was submitted."""
    for sub in submissions(git_dir):
        if (sub.data.get("server"), sub.data.get("pid")) != (server, pid) or not sub.array:
            continue
        index = next((b["index"] for b in sub.bundles
                      if b["name"] == name and b["fingerprint"] == fingerprint), None)
        if index is None:
            continue
        if sub.result_path(name).with_suffix(".registered").exists():
            return None  # registered by an earlier export: the journal knows it
        result = sub.result(name)
        if result is not None:
            ok = result.get("status") == "ok"
            return TaskOutcome(sub, index, "sent" if ok else "failed", result,
                               "" if ok else f"failed: {result.get('message', '')}")
        try:
            state, code = task_state(job_states(sub.array, sub.data.get("clusters", [])),
                                     index)
        except SlurmError as exc:  # no SLURM here (a copy of the dataset elsewhere)
            log.debug("state of SLURM task %s unknown: %s", sub.task_id(index), exc)
            state, code = None, None
        if state is not None and state not in FINISHED:
            return TaskOutcome(sub, index, "busy", None, state)
        return TaskOutcome(sub, index, "failed", None, _no_result(state, code))
    return None


def _no_result(state: str | None, code: str | None) -> str:
    return (f"ended {state or '(state no longer known)'}" + (f", exit {code}" if code else "")
            + " without a result")


def _describe_failure(outcome: TaskOutcome) -> str:
    lines = tail(outcome.log_path)
    return (f"SLURM task {outcome.job} {outcome.why or 'failed'}; log {outcome.log_path}"
            + (":\n  | " + "\n  | ".join(lines) if lines else " (empty)"))


# -- the send loop's hook -----------------------------------------------------------------

def take_upload(dataset: Path, bundle: Bundle, fingerprint: str, opts, client: Dataverse,
                pid: str, journal: mf.Journal):
    """A bundle a SLURM task uploaded, registered without sending it again.

    Called by the send loop for each bundle it would send. Returns what the loop returns
    for a bundle -- ``(record, status, message)`` -- or None when no task sent this bundle
    with this content (the loop sends it; also when its task failed, outside the final job).
    Raises :class:`TaskPending` while a task still sends it, and, in the final job,
    :class:`TaskFailed` for a bundle whose task failed: a rerun submits it again.
    """
    git_dir = journal.path.parent.parent
    if not slurm_dir(git_dir).is_dir():
        return None
    outcome = task_outcome(git_dir, bundle.name, fingerprint, journal.server, pid)
    if outcome is None:
        return None
    if outcome.state == "busy":
        raise TaskPending(f"SLURM task {outcome.job} is sending it ({outcome.why}): rerun "
                          f"when it has ended, or 'scancel {outcome.job}' first")
    if outcome.state == "failed":
        if _final_run is None:
            log.info("%s: its SLURM task %s failed; sending it from here", bundle.filename,
                     outcome.job)
            return None
        raise TaskFailed(f"not registered: {_describe_failure(outcome)}\nrerun "
                         f"'datalad rdr-export --slurm' to submit it again")
    result = outcome.result
    uploaded = Uploaded(**result["uploaded"])
    registered = register_bundle(
        client, pid, bundle.filename, uploaded, opts.restrict,
        f"datalad-rdr bundle '{bundle.logical}': {len(bundle.files)} files of "
        f"{dataset.name}", lock_timeout=opts.lock_timeout)
    record = mf.BundleRecord(
        bundle.name, bundle.logical, bundle.filename, registered.size, registered.md5,
        registered.file_id, registered.storage_identifier, registered.restricted,
        fingerprint, [mf.MemberRecord(**m) for m in result["members"]])
    journal.record(record)
    # never again: the upload is the draft's file now, and may be replaced or deleted later
    outcome.submission.result_path(bundle.name).rename(
        outcome.submission.result_path(bundle.name).with_suffix(".registered"))
    return record, "ok", (f"{bundle.filename} registered: sent by SLURM task "
                          f"{outcome.job}, {len(bundle.files)} files, "
                          f"{human(registered.size)}, file id {registered.file_id}"
                          + "".join(f"; {note}" for note in registered.notes))


# -- submit ---------------------------------------------------------------------------

def run_slurm_export(dataset: Path, opts: ex.ExportOptions, slurm: SlurmOptions
                     ) -> Iterator[dict]:
    """``rdr-export --slurm``: plan, open the draft, submit the jobs; then wait for them
    unless ``--no-wait``. Result records carry ``slurm_array`` and ``slurm_final``."""
    dataset = Path(dataset)
    try:
        with mf.ExportLock(ex._git_dir(dataset), opts.wait):
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
    git_dir = ex._git_dir(dataset)
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
    opts, plan, meta, previous, _ = prepared
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
    sub = _write_submission(dataset, git_dir, opts, plan, todo, slurm)
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


def _write_submission(dataset, git_dir, opts, plan, todo, slurm) -> Submission:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    run = slurm_dir(git_dir) / f"{stamp}-{os.getpid()}"
    for sub_dir in ("tasks", "logs", "results"):
        (run / sub_dir).mkdir(parents=True)
    for i, (bundle, fp) in enumerate(todo):
        (run / "tasks" / f"{i}.json").write_text(json.dumps(
            {"name": bundle.name, "logical": bundle.logical, "fingerprint": fp,
             "files": [asdict(f) for f in bundle.files]}))
    sub = Submission(run, {
        "dataset": str(dataset), "server": opts.url, "pid": opts.pid,
        "credential": slurm.credential, "commit": plan.commit,
        "commit_time": send._commit_time(dataset, plan.commit).isoformat(),
        "sbatch": slurm.sbatch, "clusters": clusters_of(slurm.sbatch),
        "bundles": [{"index": i, "name": b.name, "filename": b.filename, "fingerprint": fp}
                    for i, (b, fp) in enumerate(todo)],
        # the final job's export, as settled here
        "options": {"collection": opts.collection, "cap": opts.cap,
                    "recursive": opts.recursive, "restrict": opts.restrict,
                    "ignore_preflight": opts.ignore_preflight, "drop_after": opts.drop_after,
                    "jobs": opts.jobs, "lock_timeout": opts.lock_timeout,
                    "publish": opts.publish, "publish_timeout": opts.publish_timeout,
                    "ria_store": opts.ria_store, "ria_alias": opts.ria_alias},
    })
    sub.save()
    for kind in ("task", "final"):
        _write_script(run / f"{kind}.sh", kind, run)
    return sub


def _write_script(path: Path, kind: str, run: Path) -> None:
    # the jobs run this very Python, with git and git-annex from where they are found here:
    # a site's default environment on the nodes need not have them
    tools = [os.path.dirname(sys.executable)] + [
        os.path.dirname(found) for found in (shutil.which("git-annex"), shutil.which("git"))
        if found]
    path_dirs = ":".join(dict.fromkeys(tools))
    code = ("import sys; from datalad_rdr.cluster import job_main; "
            "sys.exit(job_main(sys.argv[1:]))")
    path.write_text(
        "#!/bin/bash\n"
        "# written by 'datalad rdr-export --slurm'\n"
        f"export PATH={shlex.quote(path_dirs)}:\"$PATH\"\n"
        f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)} {kind} "
        f"{shlex.quote(str(run))}\n")
    path.chmod(0o755)


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
                          _no_result(*state))
    yield ex.result(dataset / filename, "error",
                    f"{filename}: {_describe_failure(outcome)}", **where)
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


# -- in the jobs ------------------------------------------------------------------------

def job_main(argv: list[str]) -> int:
    """Entry point of the jobs: ``task RUN`` (index from SLURM_ARRAY_TASK_ID) or
    ``final RUN``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    kind, run = argv[0], Path(argv[1])
    sub = Submission(run)
    if kind == "task":
        return _run_task(sub, int(os.environ["SLURM_ARRAY_TASK_ID"]))
    return _run_final(sub)


def _token(sub: Submission, server: str) -> str:
    from datalad.distribution.dataset import Dataset

    return obtain(Dataset(sub.data["dataset"]).config, server, sub.data["credential"]).secret


def _run_task(sub: Submission, index: int) -> int:
    spec = json.loads((sub.run / "tasks" / f"{index}.json").read_text())
    bundle = Bundle(spec["name"], spec["logical"], [PlannedFile(**f) for f in spec["files"]])
    # from SLURM: the submitter may not have written the array's id yet
    dataset = Path(sub.data["dataset"])
    job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', '?')}_{index}"
    print(f"datalad-rdr: SLURM task {job} on {socket.gethostname()}: {bundle.filename}, "
          f"{len(bundle.files)} files, {human(bundle.nbytes)}", flush=True)
    opts = sub.data["options"]
    fetched, blobs = [], {}
    try:
        uploader = Uploader(Dataverse(sub.data["server"], _token(sub, sub.data["server"])),
                            sub.data["pid"], jobs=opts["jobs"])
        fetched = content.fetch(bundle.files)
        # the same members and timestamps as a local export: the same bytes
        layout = layout_zip(content.members(bundle.files, blobs,
                                            mf.known_crc32s(mf.load(dataset))),
                            mtime=dt.datetime.fromisoformat(sub.data["commit_time"]),
                            md5=False)
        uploaded = uploader.upload(layout)
        members = [asdict(send._member_record(e, f)) for e, f in
                   zip(layout.entries, sorted(bundle.files, key=lambda f: f.path))]
        outcome = {"status": "ok", "job": job, "fingerprint": spec["fingerprint"],
                   "size": uploaded.size, "md5": uploaded.md5,
                   "uploaded": asdict(uploaded), "members": members}
        code = 0
        print(f"datalad-rdr: sent {bundle.filename}: {human(uploaded.size)}, MD5 "
              f"{uploaded.md5}, {uploaded.parts} part(s)", flush=True)
    except (content.ContentError, MemberError, UploadError, DataverseError,
            CredentialError, subprocess.CalledProcessError) as exc:
        outcome = {"status": "error", "job": job, "fingerprint": spec["fingerprint"],
                   "message": str(exc)}
        code = 1
        print(f"datalad-rdr: error: {bundle.filename} not sent: {exc}", file=sys.stderr,
              flush=True)
    finally:
        for reader in blobs.values():
            reader.close()
        if opts["drop_after"] and fetched:
            for repo in {f.repo for f in bundle.files if f.key in fetched}:
                content.drop(repo, [f.key for f in bundle.files
                                    if f.repo == repo and f.key in fetched])
    mf._atomic_write(sub.result_path(bundle.name), json.dumps(outcome))
    return code


def _run_final(sub: Submission) -> int:
    global _final_run
    _final_run = sub.run
    o = sub.data["options"]
    opts = ex.ExportOptions(
        url=sub.data["server"], token_for=lambda server: _token(sub, server),
        pid=sub.data["pid"], collection=o["collection"], commit=sub.data["commit"],
        cap=o["cap"], recursive=o["recursive"], restrict=o["restrict"],
        ignore_preflight=o["ignore_preflight"], drop_after=o["drop_after"], jobs=o["jobs"],
        lock_timeout=o["lock_timeout"], publish=o["publish"],
        publish_timeout=o["publish_timeout"], ria_store=o["ria_store"],
        ria_alias=o["ria_alias"], wait=600)
    print(f"datalad-rdr: final job {sub.data.get('final')}: registering, manifest, verify",
          flush=True)
    failed = False
    out_path = sub.run / "results" / "final.jsonl"
    with open(out_path, "w") as out:
        for res in ex.run_export(Path(sub.data["dataset"]), opts):
            res.pop("exception", None)  # the message says it; not JSON
            failed = failed or res["status"] == "error"
            out.write(json.dumps(res, default=str) + "\n")
            out.flush()
            print(f"[{res['status']}] {res.get('message', '')}", flush=True)
    return 1 if failed else 0
