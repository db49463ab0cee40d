"""The send loop's hook: a bundle a SLURM task uploaded is registered, not sent again."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import manifest as mf, send
from ..dataverse import Dataverse
from ..plan import Bundle
from ..sizes import human
from ..upload import Uploaded, UploadError
from .submission import describe_failure, slurm_dir, task_outcome

log = logging.getLogger("datalad.rdr.cluster")

_final_run: Path | None = None  # set in the final job: a bundle whose task failed is not sent


class TaskPending(UploadError):
    """A SLURM task is still sending this bundle."""


class TaskFailed(UploadError):
    """The bundle's SLURM task failed; the final job does not send it in its place."""


def in_final_job(run: Path) -> None:
    """The final job of submission ``run`` runs: from now on a bundle whose task failed is
    not sent (:func:`take_upload` raises :class:`TaskFailed`)."""
    global _final_run
    _final_run = run


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
        raise TaskFailed(f"not registered: {describe_failure(outcome)}\nrerun "
                         f"'datalad rdr-export --slurm' to submit it again")
    result = outcome.result
    record, registered = send.register_uploaded(
        dataset, bundle, Uploaded(**result["uploaded"]), fingerprint,
        [mf.MemberRecord(**m) for m in result["members"]], opts, client, pid, journal)
    # never again: the upload is the draft's file now, and may be replaced or deleted later
    outcome.submission.result_path(bundle.name).rename(
        outcome.submission.result_path(bundle.name).with_suffix(".registered"))
    return record, "ok", (f"{bundle.filename} registered: sent by SLURM task "
                          f"{outcome.job}, {len(bundle.files)} files, "
                          f"{human(registered.size)}, file id {registered.file_id}"
                          + "".join(f"; {note}" for note in registered.notes))
