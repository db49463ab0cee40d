"""The SLURM the tests use: is it usable (and why not), its ``SLURM_CONF``, its jobs' states.

The cluster is a real one: CI starts a single node on localhost with ``.ci/slurm start``
(see docs/slurm-testing.rst); a developer may use that or any cluster whose ``sbatch`` is on
PATH. There is no accounting database on the CI node, so ``sacct`` does not answer there; job
state comes from ``scontrol show job``, which keeps finished jobs for ``MinJobAge`` seconds.
"""
import functools
import os
import shutil
import subprocess
import time

import pytest

# Where `.ci/slurm start` keeps its cluster unless $SLURM_STATE_DIR says otherwise.
DEFAULT_STATE_DIR = "/tmp/datalad-rdr-slurm"
START_HINT = 'start the test cluster with: eval "$(.ci/slurm start)"'
# States of a node that takes jobs (sinfo %t; a trailing * or ~ marks not responding/powered off).
READY_NODE_STATES = {"idle", "mix", "alloc", "comp"}
FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                   "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def slurm_conf():
    """The slurm.conf to use: $SLURM_CONF, else that of `.ci/slurm start` if it exists,
    else None (SLURM's own default, e.g. /etc/slurm/slurm.conf)."""
    if os.environ.get("SLURM_CONF"):
        return os.environ["SLURM_CONF"]
    ours = os.path.join(os.environ.get("SLURM_STATE_DIR") or DEFAULT_STATE_DIR, "slurm.conf")
    return ours if os.path.exists(ours) else None


def slurm_env():
    """os.environ with SLURM_CONF set to the slurm.conf the tests use."""
    env = dict(os.environ)
    conf = slurm_conf()
    if conf:
        env["SLURM_CONF"] = conf
    return env


def run(*cmd, timeout=30, check=True):
    """Run a SLURM client command against the test cluster; its stdout, stripped."""
    proc = subprocess.run(cmd, env=slurm_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def sbatch_missing():
    """Why sbatch cannot be run here, or None when it is on PATH."""
    if shutil.which("sbatch") is None:
        return f"sbatch is not on PATH (no SLURM client here; {START_HINT})"
    return None


def unusable_reason():
    """None when jobs can be submitted to a node that takes them; else the reason, one line."""
    missing = sbatch_missing()
    if missing:
        return missing
    conf = slurm_conf()
    if conf and not os.path.exists(conf):
        return f"SLURM_CONF={conf} does not exist; {START_HINT}"
    return _cluster_reason(shutil.which("sinfo"), conf)


# A controller that does not answer costs sinfo's retries (about 10 s): ask once per session.
@functools.lru_cache(maxsize=None)
def _cluster_reason(sinfo, conf):
    if sinfo is None:
        return f"sinfo is not on PATH (incomplete SLURM client); {START_HINT}"
    try:
        proc = subprocess.run([sinfo, "-h", "-o", "%t"], env=slurm_env(),
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return f"sinfo gave no answer within 15 s (slurmctld down?); {START_HINT}"
    if proc.returncode:
        return f"sinfo failed: {proc.stderr.strip() or proc.returncode}; {START_HINT}"
    states = proc.stdout.split()
    if not READY_NODE_STATES.intersection(states):
        return f"no SLURM node takes jobs (node states: {' '.join(states) or 'none'})"
    return None


def require_slurm():
    """Skip the calling test where sbatch is absent; fail where SLURM should work but does not:
    always in CI (env var CI set), and wherever sbatch is installed."""
    reason = unusable_reason()
    if reason is None:
        return
    if sbatch_missing() and not os.environ.get("CI"):
        pytest.skip(reason)
    pytest.fail(f"SLURM is not usable: {reason}", pytrace=False)


def job_states(job_id):
    """{task: record} of a job from `scontrol show job`; task is the array index (int) of an
    array job's tasks, None for a plain job; record holds JobState, ExitCode, Reason, ..."""
    out = run("scontrol", "show", "job", "-o", str(job_id))
    states = {}
    for line in out.splitlines():
        record = dict(field.split("=", 1) for field in line.split() if "=" in field)
        task = record.get("ArrayTaskId")
        # A pending array shows its waiting tasks as one line, e.g. ArrayTaskId=1-2.
        if task is None:
            states[None] = record
        elif task.isdigit():
            states[int(task)] = record
        else:
            states[task] = record
    return states


def wait_for(predicate, timeout=20, what="the condition"):
    """Poll predicate() until it returns something true; that value. Fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.3)
