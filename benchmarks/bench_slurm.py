#!/usr/bin/env python
"""Benchmark ``datalad rdr-export --slurm`` against a local export, on one SLURM node.

    python benchmarks/bench_slurm.py [--subjects 6] [--image-mb 2] [--repeat 2]

Two BIDS-like datasets are generated alike (``--subjects`` subjects, each with a T1w, two BOLD
runs and an fMRIPrep output of ``--image-mb`` MB of incompressible data; capped so that raw
data go in one bundle per subject or two). Each is exported to its own draft of an in-process
sandbox: one by ``datalad rdr-export`` (local), the other by ``datalad rdr-export --slurm``
(waiting) on the SLURM of ``$SLURM_CONF`` (CI and tests: ``.ci/slurm start``, one node on
this machine, so both send over loopback and the difference is the cost of going through
SLURM, not a faster link). Both run as ``datalad -f json`` processes; the results' arrival
times and ``scontrol``'s job records give:

- wall time of each;
- *submission*: from the start of ``--slurm`` to its "submitted" result (planning, pre-flight,
  draft, ``sbatch --test-only``, the task description, two ``sbatch``);
- *queue*: from then to the first task's start (SLURM's scheduling);
- *tasks*: the first task's start to the last one's end, and a task's mean run time (Python and
  DataLad start-up, the fetch check, the upload);
- *consolidation*: the final job's run time (the export again: plan, pre-flight, register each
  upload, README, manifest commit, verify, git-annex records), and from its end to the
  command's exit (the submitter's poll);
- *overhead*: wall of ``--slurm`` minus wall of the local export.

scontrol's times have a resolution of one second. ``--repeat`` runs the pair that many times
(new datasets each time) and prints each run and the median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
DATALAD = str(BIN / "datalad")


def scontrol(job: str) -> dict:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                         text=True, check=True).stdout
    records = {}
    for line in out.splitlines():
        rec = dict(f.split("=", 1) for f in line.split() if "=" in f)
        records[rec.get("ArrayTaskId")] = rec
    return records


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()  # scontrol: local time


def export(ds: Path, sb, cap: int, *extra: str) -> tuple[float, list[tuple[float, dict]]]:
    """Wall seconds and (arrival time, result) of ``datalad -f json rdr-export``."""
    env = {**os.environ, "DATALAD_CREDENTIAL_RDR_SECRET": sb.api_token,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    began = time.time()
    proc = subprocess.Popen([DATALAD, "-f", "json", "rdr-export", "-d", str(ds), "--url",
                             sb.dataverse_url, "--collection", sb.collection,
                             "--max-bundle-size", str(cap), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    results = []
    for line in proc.stdout:
        try:
            results.append((time.time(), json.loads(line)))
        except ValueError:
            continue
    proc.wait()
    wall = time.time() - began
    bad = [r["message"] for _, r in results if r.get("status") == "error"]
    if proc.returncode or bad:
        sys.exit(f"export of {ds} failed: {bad or proc.returncode}")
    return wall, results, began


def one_pair(work: Path, subjects: int, image: int) -> dict:
    from datalad_rdr.demo import make_bids_dataset
    from datalad_rdr.sandbox.cli import Sandbox

    cap = 4 * image + 100_000  # a subject's three images, with room: one raw bundle each
    local_ds = make_bids_dataset(work / "local", subjects=subjects, nifti_bytes=image,
                                 derivatives={"fmriprep": image})
    slurm_ds = make_bids_dataset(work / "slurm", subjects=subjects, nifti_bytes=image,
                                 derivatives={"fmriprep": image})
    with Sandbox("rdr") as sb:
        local_wall, local_results, _ = export(local_ds, sb, cap)
        slurm_wall, results, began = export(slurm_ds, sb, cap, "--slurm")
    sub = next(r for _, r in results if r.get("slurm_final") and "submitted" in r["message"])
    submitted = next(t for t, r in results if r is sub)
    tasks = [rec for key, rec in scontrol(sub["slurm_array"]).items()]
    final = scontrol(sub["slurm_final"])[None]
    starts = [stamp(t["StartTime"]) for t in tasks]
    ends = [stamp(t["EndTime"]) for t in tasks]
    return {
        "bundles": len(tasks),
        "bytes": sum(r.get("size") or 0 for _, r in local_results if r.get("bundle")),
        "local": local_wall,
        "slurm": slurm_wall,
        "submission": submitted - began,
        "queue": max(0.0, min(starts) - submitted),  # scontrol: whole seconds
        "tasks": max(ends) - min(starts),
        "task_mean": statistics.mean(e - s for s, e in zip(starts, ends)),
        "final_queue": max(0.0, stamp(final["StartTime"]) - max(ends)),
        "final": stamp(final["EndTime"]) - stamp(final["StartTime"]),
        "after_final": began + slurm_wall - stamp(final["EndTime"]),
        "overhead": slurm_wall - local_wall,
    }


ROWS = [("bundles", "bundles (= array tasks)", "{:.0f}"),
        ("bytes", "bytes of bundles", "{:.0f}"),
        ("local", "local export, wall (s)", "{:.1f}"),
        ("slurm", "--slurm, wall (s)", "{:.1f}"),
        ("submission", "  submission (s)", "{:.1f}"), ("queue", "  queue (s)", "{:.0f}"),
        ("tasks", "  tasks, first start to last end (s)", "{:.0f}"),
        ("task_mean", "  one task, mean (s)", "{:.1f}"),
        ("final_queue", "  final job's queue after the tasks (s)", "{:.0f}"),
        ("final", "  consolidation: final job (s)", "{:.0f}"),
        ("after_final", "  final job's end to exit (s)", "{:.1f}"),
        ("overhead", "overhead: --slurm minus local (s)", "{:.1f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--image-mb", type=float, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("SLURM_CONF") and not Path("/etc/slurm/slurm.conf").exists():
        sys.exit('no SLURM: start the test cluster with: eval "$(.ci/slurm start)"')
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
            runs.append(one_pair(Path(tmp), args.subjects, int(args.image_mb * 1e6)))
    width = max(len(label) for _, label, _ in ROWS)
    print(f"{'':{width}}  " + "  ".join(f"run {i + 1:>3}" for i in range(len(runs)))
          + "   median")
    for key, label, fmt in ROWS:
        values = [r[key] for r in runs]
        print(f"{label:{width}}  " + "  ".join(f"{fmt.format(v):>7}" for v in values)
              + f"  {fmt.format(statistics.median(values)):>7}")


if __name__ == "__main__":
    main()
