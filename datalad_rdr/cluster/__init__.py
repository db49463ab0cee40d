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

# The job scripts of a submission run ``datalad_rdr.cluster.job_main``: keep it here, also for
# scripts written by an earlier version that are still queued.
from .hook import TaskFailed, TaskPending, take_upload
from .run import run_slurm_export
from .slurm import SlurmError, SlurmOptions, parse_sbatch
from .task import job_main

__all__ = ["SlurmError", "SlurmOptions", "TaskFailed", "TaskPending", "job_main",
           "parse_sbatch", "run_slurm_export", "take_upload"]
