"""What the jobs run: an array task streams and uploads one bundle; the final job runs the
plain export, whose send loop registers what the tasks sent."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from .. import content, export as ex, manifest as mf, send
from ..credentials import CredentialError, obtain
from ..dataverse import Dataverse, DataverseError
from ..plan import Bundle, PlannedFile
from ..sizes import human
from ..upload import Uploader, UploadError
from ..zipstream import MemberError, layout_zip
from . import hook
from .submission import Submission

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
        located = content.fetch(bundle.files)
        fetched = located.fetched
        # the same members and timestamps as a local export: the same bytes
        layout = layout_zip(content.members(bundle.files, blobs,
                                            mf.known_crc32s(mf.load(dataset)), located),
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
    hook.in_final_job(sub.run)
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
