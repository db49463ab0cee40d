"""SLURM's client commands as the export uses them: sbatch (its options checked, the jobs
submitted), scontrol and sacct (job states), scancel."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

# sbatch options the export sets itself: given again they would break the job layout
OWN_OPTIONS = {"-a": "--array", "--array": "--array", "-d": "--dependency",
               "--dependency": "--dependency", "-o": "--output", "--output": "--output",
               "-e": "--error", "--error": "--error", "--wrap": "--wrap",
               "--parsable": "--parsable", "--test-only": "--test-only"}
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}


class SlurmError(Exception):
    """sbatch refused a job, or an sbatch option cannot be used: one line for the user."""


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
