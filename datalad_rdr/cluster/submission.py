"""The task description on the dataset's file system: ``submission.json``, the tasks, the
job scripts, the logs and the tasks' results; what a bundle's newest task did."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import manifest as mf, send
from .slurm import FINISHED, SlurmError, clusters_of, job_states, task_state

log = logging.getLogger("datalad.rdr.cluster")

LOG_LINES = 5  # of a failed job's log, in its result


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
        return TaskOutcome(sub, index, "failed", None, no_result(state, code))
    return None


def no_result(state: str | None, code: str | None) -> str:
    return (f"ended {state or '(state no longer known)'}" + (f", exit {code}" if code else "")
            + " without a result")


def describe_failure(outcome: TaskOutcome) -> str:
    lines = tail(outcome.log_path)
    return (f"SLURM task {outcome.job} {outcome.why or 'failed'}; log {outcome.log_path}"
            + (":\n  | " + "\n  | ".join(lines) if lines else " (empty)"))


def write_submission(dataset, git_dir, opts, plan, todo, slurm) -> Submission:
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
