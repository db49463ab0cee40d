#!/usr/bin/env python
"""Benchmark ``datalad get`` of one file out of a large bundle vs downloading the bundle.

    python benchmarks/bench_get.py [--bundle-gb 4] [--file-mb 10] [--repeat 3] [--quick]

In one run, against the embedded sandbox (RDR profile, 64 MiB upload parts, its S3 objects
in /dev/shm when there is room):

1. a BIDS-like DataLad dataset whose ``raw`` bundle is ~``--bundle-gb`` (NIfTI images of
   ``--file-mb`` of incompressible bytes, three per subject, all in one bundle) is exported
   with ``datalad rdr-export --ria-store``, then cloned through the RIA alias;
2. **ours**: ``datalad get sub-01/anat/sub-01_T1w.nii.gz`` in the clone (the ``rdr`` special
   remote: one HTTP Range request for the member), and the same with plain ``git annex get``
   (no DataLad start-up);
3. **bundle**: what a user without the remote does: ``curl -L`` of the bundle's access URL
   (following the 303 to the store), then ``unzip -p`` of the one file.

Each route runs ``--repeat`` times (the file is dropped in between); the table shows the
median wall time and the bytes the sandbox's S3 server sent (``gate.stats.bytes_served``).
Targets (issue 5): ours takes <= 1/50 of the bundle route's time, and sends <= the file's size
+ 64 KiB. On loopback the bundle downloads at memory speed, which favours the bundle route;
the table also extrapolates both routes to a 1 Gbit/s and a 100 Mbit/s link (bytes / rate +
the measured time minus the measured transfer at loopback speed).

``--quick`` (a ~200 MB bundle, 2 repeats) is the smoke test. Everything is removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent  # the venv's bin: datalad, git-annex, git-annex-remote-rdr
MB = 1000**2
GB = 1000**3
TARGET = "sub-01/anat/sub-01_T1w.nii.gz"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle-gb", type=float, default=4.0)
    parser.add_argument("--file-mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="a ~200 MB bundle and 2 repeats: a smoke test")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.bundle_gb, args.repeat = 0.2, 2
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    for var, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_COMMITTER_NAME", "bench"),
                       ("GIT_AUTHOR_EMAIL", "bench@localhost"),
                       ("GIT_COMMITTER_EMAIL", "bench@localhost")):
        os.environ.setdefault(var, value)
    os.environ.setdefault("DATALAD_LOG_LEVEL", "WARNING")
    for tool in ("curl", "unzip"):
        if not shutil.which(tool):
            print(f"bench_get: needs {tool}", file=sys.stderr)
            return 2
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-get-"))
    work.mkdir(parents=True, exist_ok=True)
    shm = None
    try:
        need = args.bundle_gb * GB * 1.3
        if shutil.disk_usage("/dev/shm").free > 2 * need:
            shm = tempfile.mkdtemp(prefix="bench-get-sandbox-", dir="/dev/shm")
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
    subjects = max(2, math.ceil(args.bundle_gb * GB / (3 * file_bytes)))
    say = lambda text="": print(text, flush=True)
    with Sandbox("rdr", data_dir=shm, part_size=64 * 2**20) as sb:
        os.environ["DATALAD_CREDENTIAL_RDR_SECRET"] = sb.api_token
        t = time.monotonic()
        ds = make_bids_dataset(work / "ds", subjects=subjects, nifti_bytes=file_bytes)
        rules = ds / ".datalad/rdr/bundles"
        rules.write_text("sub-*/**  raw\n")
        dl.save(dataset=str(ds), result_renderer="disabled")
        say(f"dataset: {subjects} subjects x 3 images of {file_bytes / MB:.0f} MB "
            f"({time.monotonic() - t:.0f} s)")
        t = time.monotonic()
        store = f"ria+file://{work / 'store'}"
        results = dl.rdr_export(dataset=str(ds), url=sb.dataverse_url,
                                collection=sb.collection,
                                max_bundle_size=int(args.bundle_gb * GB * 1.2) + 10**7,
                                ria_store=store, ria_alias="bench",
                                result_renderer="disabled", return_type="list",
                                on_failure="ignore")
        bad = [r for r in results if r["status"] in ("error", "impossible")]
        if bad:
            say(f"export failed: {bad[0].get('message')}")
            return 1
        import json

        manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
        bundle = next(b for b in manifest["bundles"]
                      if any(m["path"] == TARGET for m in b["members"]))
        size = next(m["size"] for m in bundle["members"] if m["path"] == TARGET)
        say(f"export: {bundle['filename']} {bundle['size'] / GB:.2f} GB "
            f"({time.monotonic() - t:.0f} s, with the RIA push)")
        clone = work / "clone"
        dl.clone(source=f"{store}#~bench", path=str(clone), result_renderer="disabled")
        original = (ds / TARGET).read_bytes()

        def measure(cmd, cwd, check_file, cleanup):
            times, served = [], []
            for _ in range(args.repeat):
                cleanup()
                before = sum(sb.gate.stats.bytes_served.values())
                t = time.monotonic()
                r = subprocess.run(cmd, cwd=cwd, shell=isinstance(cmd, str),
                                   capture_output=True, text=True, check=False)
                times.append(time.monotonic() - t)
                served.append(sum(sb.gate.stats.bytes_served.values()) - before)
                if r.returncode or check_file().read_bytes() != original:
                    raise SystemExit(f"{cmd} failed: {r.stdout}{r.stderr}")
            return statistics.median(times), int(statistics.median(served))

        def drop():
            subprocess.run(["git", "annex", "drop", "--force", TARGET], cwd=clone,
                           capture_output=True, check=False)

        rows = {}
        rows["datalad get (ours)"] = measure(["datalad", "get", TARGET], clone,
                                             lambda: clone / TARGET, drop)
        rows["git annex get (ours)"] = measure(["git", "annex", "get", TARGET], clone,
                                               lambda: clone / TARGET, drop)
        url = f"{sb.dataverse_url}/api/access/datafile/{bundle['file_id']}"
        out = work / "manual"
        out.mkdir()

        def rm_download():
            for p in out.iterdir():
                p.unlink()

        rows["curl bundle + unzip -p"] = measure(
            f"curl -sSfL -H 'X-Dataverse-key: {sb.api_token}' -o bundle.zip '{url}' && "
            f"unzip -p bundle.zip {TARGET} > member", out, lambda: out / "member",
            rm_download)
    ours_t, ours_b = rows["datalad get (ours)"]
    bundle_t, bundle_b = rows["curl bundle + unzip -p"]
    loopback = bundle_b / max(bundle_t, 1e-9)  # bytes/s the bundle route reached
    say(f"\nfile {TARGET}: {size:,} bytes; bundle {bundle['filename']}: "
        f"{bundle['size']:,} bytes; median of {args.repeat}")
    say(f"{'route':<26}{'wall s':>9}{'bytes served':>16}{'@1 Gbit/s':>11}"
        f"{'@100 Mbit/s':>13}")
    for name, (t, b) in rows.items():
        at = [t - b / loopback + b / rate for rate in (125 * MB, 12.5 * MB)]
        say(f"{name:<26}{t:>9.2f}{b:>16,}{at[0]:>10.1f}s{at[1]:>12.1f}s")
    say(f"\nbundle route / ours: {bundle_t / ours_t:.1f}x the time, "
        f"{bundle_b / max(ours_b, 1):.0f}x the bytes (loopback, {loopback / MB:.0f} MB/s)")
    fits_bytes = ours_b <= size + 64 * 1024
    say(f"bytes: ours {ours_b:,} <= file + 64 KiB ({size + 64 * 1024:,}): "
        f"{'yes' if fits_bytes else 'NO'}")
    for label, rate in (("loopback", loopback), ("1 Gbit/s", 125 * MB),
                        ("100 Mbit/s", 12.5 * MB)):
        o = ours_t - ours_b / loopback + ours_b / rate
        m = bundle_t - bundle_b / loopback + bundle_b / rate
        say(f"time at {label:<10}: ours {o:6.2f} s, bundle {m:7.1f} s -> 1/{m / o:.0f} "
            f"({'meets' if m / o >= 50 else 'misses'} the 1/50 target)")
    return 0 if fits_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
