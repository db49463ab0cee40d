#!/usr/bin/env python
"""Benchmark ``datalad get`` of a large bundle's LAST member, with and without download redirect.

    python benchmarks/bench_redirect.py [--bundle-mb 200] [--file-mb 10] [--quick] [--keep]

Issue 10 ("Measure"). Dataverse 6.7.1 serves a Range request on the access URL in one of two
ways, chosen by the store's ``download-redirect`` setting:

- **redirect**: a 303 to a presigned S3 URL; the client sends its Range to the store, which
  reads just those bytes;
- **streamed**: the API server GETs the whole object from S3 and skips (reads and discards)
  everything before the range (S3AccessIO.setOffset), so the member whose data lies last in
  a bundle costs nearly the whole bundle read from S3.

In one run, against the embedded sandbox (RDR profile, its S3 objects in /dev/shm when there is
room), a BIDS-like DataLad dataset whose ``raw`` bundle is ~``--bundle-mb`` (NIfTI images of
``--file-mb`` of incompressible bytes, all in one bundle) is exported with ``datalad rdr-export
--ria-store`` (a subprocess, as ``datalad get`` is, with the token in
DATALAD_CREDENTIAL_RDR_SECRET) and cloned through the RIA alias. Then ``datalad get`` of the
annexed member with the largest ``data_offset`` in the manifest runs once per route (the
sandbox's ``download_redirect`` is switched on the running server; the file is dropped in
between). The table shows the get's wall time, the bytes sent to the client (the store's for
redirect, the API's for streamed), the bytes the S3 server sent (``gate.stats.bytes_served``:
what was read from S3) and their ratio; ``s3_bytes_read["download"]`` (what the API itself
read) is a cross-check. On loopback S3 reads at memory speed, so the wall times differ little
below ~2 GB; the last lines model the wait the skip adds where the API server reads S3 over a
network (extra bytes / link rate).

``--quick`` is a ~50 MB bundle (two subjects: 60 MB). Everything is removed at the end unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's bin: datalad, git-annex, git-annex-remote-rdr
MB = 1000**2


class CountingApp:
    """A WSGI wrapper that counts the body bytes the API server sends to its clients."""

    def __init__(self, app):
        self.app, self.sent = app, 0

    def __call__(self, environ, start_response):
        body = self.app(environ, start_response)
        try:
            for chunk in body:
                self.sent += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle-mb", type=float, default=200.0)
    parser.add_argument("--file-mb", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a ~50 MB bundle: a smoke test")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.bundle_mb = 50.0
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    for var, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_COMMITTER_NAME", "bench"),
                       ("GIT_AUTHOR_EMAIL", "bench@localhost"),
                       ("GIT_COMMITTER_EMAIL", "bench@localhost")):
        os.environ.setdefault(var, value)
    os.environ.setdefault("DATALAD_LOG_LEVEL", "WARNING")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-redirect-"))
    work.mkdir(parents=True, exist_ok=True)
    shm = None
    try:
        if shutil.disk_usage("/dev/shm").free > 3 * args.bundle_mb * MB:
            shm = tempfile.mkdtemp(prefix="bench-redirect-sandbox-", dir="/dev/shm")
        return run(args, work, shm)
    finally:
        if shm:
            shutil.rmtree(shm, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def run(args, work: Path, shm: str | None) -> int:
    import datalad.api as dl

    from datalad_rdr.demo import make_bids_dataset
    from datalad_rdr.sandbox.cli import Sandbox

    file_bytes = int(args.file_mb * MB)
    subjects = max(1, round(args.bundle_mb * MB / (3 * file_bytes)))
    say = lambda text="": print(text, flush=True)
    with Sandbox("rdr", data_dir=shm, part_size=64 * 2**20) as sb:
        os.environ["DATALAD_CREDENTIAL_RDR_SECRET"] = sb.api_token  # export and get
        api = sb.dataverse_server.server.app = CountingApp(sb.dataverse_server.server.app)
        t = time.monotonic()
        ds = make_bids_dataset(work / "ds", subjects=subjects, nifti_bytes=file_bytes)
        (ds / ".datalad/rdr/bundles").write_text("sub-*/**  raw\n")
        dl.save(dataset=str(ds), result_renderer="disabled")
        say(f"dataset: {subjects} subjects x 3 images of {file_bytes / MB:.0f} MB "
            f"({time.monotonic() - t:.0f} s)")
        t = time.monotonic()
        store = f"ria+file://{work / 'store'}"
        r = subprocess.run(
            ["datalad", "rdr-export", "-d", str(ds), "--url", sb.dataverse_url,
             "--collection", sb.collection, "--ria-store", store, "--ria-alias", "bench",
             "--max-bundle-size", str(int(args.bundle_mb * MB * 1.5) + 10**7)],
            capture_output=True, text=True, check=False)
        if r.returncode:
            say(f"export failed:\n{r.stdout}{r.stderr}")
            return 1
        manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
        bundle = next(b for b in manifest["bundles"] if b["logical"] == "raw")
        # Only annexed members are fetched by the remote; files in git come with the clone.
        member = max((m for m in bundle["members"] if m["key"]),
                     key=lambda m: m["data_offset"])
        target = member["path"]
        say(f"export: {bundle['filename']} {bundle['size'] / MB:.1f} MB, "
            f"{len(bundle['members'])} members ({time.monotonic() - t:.0f} s, with the RIA push)")
        clone = work / "clone"
        dl.clone(source=f"{store}#~bench", path=str(clone), result_renderer="disabled")
        original = (ds / target).read_bytes()

        rows = {}
        for route, redirect in (("redirect (303 to S3)", True), ("streamed by the API", False)):
            sb.configure(download_redirect=redirect)
            subprocess.run(["git", "annex", "drop", "--force", target], cwd=clone,
                           capture_output=True, check=False)
            served = sum(sb.gate.stats.bytes_served.values())
            api_read = sb.dataverse.s3_bytes_read["download"]
            api_sent, streams = api.sent, len(sb.dataverse.download_reads)
            t = time.monotonic()
            r = subprocess.run(["datalad", "get", target], cwd=clone, capture_output=True,
                               text=True, check=False)
            wall = time.monotonic() - t
            if r.returncode or (clone / target).read_bytes() != original:
                say(f"datalad get ({route}) failed:\n{r.stdout}{r.stderr}")
                return 1
            read = sum(sb.gate.stats.bytes_served.values()) - served
            from_api = api.sent - api_sent
            # With redirect the client reads from the store itself, so what S3 sent is
            # what the client got (plus the API's few bytes of 303).
            sent = from_api + (read if redirect else 0)
            rows[route] = (wall, sent, read, sb.dataverse.s3_bytes_read["download"] - api_read,
                           len(sb.dataverse.download_reads) - streams)
    say(f"\nlast member {target}: {member['size']:,} bytes ({member['method']}) at data_offset "
        f"{member['data_offset']:,} of {bundle['size']:,} "
        f"({member['data_offset'] / bundle['size']:.1%} into the bundle)")
    say(f"{'route':<22}{'get s':>8}{'sent to client':>16}{'read from S3':>15}"
        f"{'read/sent':>11}{'API read':>14}{'streams':>9}")
    for route, (wall, sent, read, api_read, streams) in rows.items():
        say(f"{route:<22}{wall:>8.2f}{sent:>16,}{read:>15,}{read / max(sent, 1):>10.2f}x"
            f"{api_read:>14,}{streams:>9}")
    (rw, rs, rr, _, _), (sw, ss, sr, _, _) = rows.values()
    say(f"\nstreamed / redirect: {sw / rw:.1f}x the get's time, {sr / max(rr, 1):.1f}x the "
        f"bytes read from S3 (loopback)")
    extra = sr - ss
    for label, rate in (("10 Gbit/s", 1250 * MB), ("1 Gbit/s", 125 * MB)):
        say(f"model, API<->S3 at {label}: the skip of {extra / MB:,.0f} MB adds "
            f"{extra / rate:.1f} s to the streamed get")
    return 0


if __name__ == "__main__":
    sys.exit(main())
