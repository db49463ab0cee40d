"""The SLURM cluster works the way `datalad rdr-export --slurm` uses it.

An array job whose tasks write files into a directory they share with the submitter, a job
that runs only after all of them succeeded, each task's state and log, a failed task that holds
its dependent back, and a running task cancelled. These run on a real cluster (CI: the single
node of `.ci/slurm start`); they skip where sbatch is absent and fail in CI.
"""
import os
import socket
import subprocess
from pathlib import Path

import pytest

from slurm import (DEFAULT_STATE_DIR, FINISHED_STATES, job_states, require_slurm, run,
                   slurm_conf, unusable_reason, wait_for)


@pytest.fixture
def submit(tmp_path):
    """submit(*sbatch_options, wrap=command): the job id; jobs left are cancelled afterwards."""
    require_slurm()
    submitted = []

    def submit(*options, wrap):
        out = run("sbatch", "--parsable", f"--chdir={tmp_path}", "--time=5", *options,
                  "--wrap", wrap)
        job_id = out.split(";")[0]  # "id;cluster" on a multi-cluster setup
        submitted.append(job_id)
        return job_id

    yield submit
    if submitted:
        run("scancel", *submitted, check=False)


def states_of(job_id):
    return {task: record["JobState"] for task, record in job_states(job_id).items()}


def finished(job_id, tasks):
    """job_states(job_id) once all of tasks have finished, else None."""
    states = job_states(job_id)
    done = set(states) == set(tasks) and all(
        states[t]["JobState"] in FINISHED_STATES for t in tasks)
    return states if done else None


def test_array_tasks_write_files_then_dependent_job_runs(submit, tmp_path):
    array = submit("--array=0-2", f"--output={tmp_path}/%A_%a.log",
                   wrap='echo "part $SLURM_ARRAY_TASK_ID" > part-$SLURM_ARRAY_TASK_ID; '
                        'echo "task $SLURM_ARRAY_TASK_ID done"')
    after = submit(f"--dependency=afterok:{array}", f"--output={tmp_path}/%j.log",
                   wrap="cat part-0 part-1 part-2 > all")

    joined = wait_for(lambda: finished(after, [None]), timeout=30, what=f"job {after} finished")
    tasks = job_states(array)
    assert {t: r["JobState"] for t, r in tasks.items()} == {
        0: "COMPLETED", 1: "COMPLETED", 2: "COMPLETED"}
    assert {r["ExitCode"] for r in tasks.values()} == {"0:0"}
    assert joined[None]["JobState"] == "COMPLETED"
    assert (tmp_path / "all").read_text() == "part 0\npart 1\npart 2\n"
    for i in range(3):
        assert (tmp_path / f"{array}_{i}.log").read_text() == f"task {i} done\n"
    # ISO timestamps: the dependent job started no earlier than the last task ended.
    assert joined[None]["StartTime"] >= max(r["EndTime"] for r in tasks.values())


def test_failed_task_is_seen_and_holds_back_afterok(submit, tmp_path):
    array = submit("--array=0-1", f"--output={tmp_path}/%A_%a.log",
                   wrap='[ "$SLURM_ARRAY_TASK_ID" = 1 ] && exit 3; true')
    after = submit(f"--dependency=afterok:{array}", wrap="touch ran")

    tasks = wait_for(lambda: finished(array, [0, 1]), timeout=30, what=f"tasks of {array}")
    assert tasks[0]["JobState"] == "COMPLETED" and tasks[0]["ExitCode"] == "0:0"
    assert tasks[1]["JobState"] == "FAILED" and tasks[1]["ExitCode"] == "3:0"
    held = wait_for(lambda: job_states(after)[None]["Reason"] == "DependencyNeverSatisfied",
                    timeout=15, what=f"job {after} marked DependencyNeverSatisfied")
    assert held
    assert states_of(after) == {None: "PENDING"}
    assert not (tmp_path / "ran").exists()


def test_cancelled_running_task_is_cancelled_and_its_process_gone(submit, tmp_path):
    array = submit("--array=0-1", f"--output={tmp_path}/%A_%a.log",
                   wrap='echo $$ > pid-$SLURM_ARRAY_TASK_ID; exec sleep 300')

    def running():
        states = states_of(array)
        return (states == {0: "RUNNING", 1: "RUNNING"}
                and all((tmp_path / f"pid-{i}").exists() for i in (0, 1)))

    wait_for(running, timeout=15, what=f"both tasks of {array} running")
    run("scancel", f"{array}_1")
    wait_for(lambda: states_of(array)[1] == "CANCELLED", timeout=15,
             what=f"task {array}_1 cancelled")
    assert states_of(array)[0] == "RUNNING"
    if job_states(array)[1]["BatchHost"] in ("localhost", socket.gethostname()):
        pid = int((tmp_path / "pid-1").read_text())
        wait_for(lambda: not _alive(pid), timeout=15, what=f"process {pid} of {array}_1 gone")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# The skip/fail policy itself: these need no cluster.

def test_without_sbatch_the_tests_skip_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    assert unusable_reason().startswith("sbatch is not on PATH")
    with pytest.raises(pytest.skip.Exception, match="sbatch is not on PATH"):
        require_slurm()


def test_in_ci_without_sbatch_the_tests_fail(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="SLURM is not usable: sbatch is not on"):
        require_slurm()


def test_with_sbatch_but_no_cluster_the_tests_fail_naming_the_cause(monkeypatch, tmp_path):
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-such.conf"))
    with pytest.raises(pytest.fail.Exception, match=r"SLURM_CONF=.*no-such.conf does not exist"):
        require_slurm()


# `.ci/slurm` itself, where it runs the cluster the tests use.

CI_SLURM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        ".ci", "slurm")


def _ci_slurm(*args, **env):
    return subprocess.run(["bash", CI_SLURM, *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


def test_ci_slurm_start_again_keeps_the_running_cluster():
    require_slurm()
    conf = slurm_conf()
    if conf is None or os.path.dirname(conf) != os.environ.get("SLURM_STATE_DIR",
                                                               DEFAULT_STATE_DIR):
        pytest.skip(f"the cluster in use ({conf or 'the system default'}) is not .ci/slurm's")
    pids = {name: (Path(conf).parent / name).read_text() for name in ("slurmctld.pid",
                                                                       "slurmd.pid")}
    proc = _ci_slurm("start")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"export SLURM_CONF={conf}\n"
    assert "already running" in proc.stderr
    assert {name: (Path(conf).parent / name).read_text() for name in pids} == pids


def test_ci_slurm_start_refuses_a_port_taken(tmp_path):
    require_slurm()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _ci_slurm("start", SLURM_STATE_DIR=str(tmp_path / "state"),
                         SLURM_CTLD_PORT=str(port))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert f"port {port} is taken; set SLURM_CTLD_PORT to a free one" in proc.stderr
    assert not (tmp_path / "state" / "slurm.conf").exists()
