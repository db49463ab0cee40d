#!/usr/bin/env python
"""Benchmark ``datalad rdr-export --check-server``: its time, and how many requests it makes.

    python benchmarks/bench_check_server.py [--repeat 5]

Against the embedded sandbox, three cases:

- ``collection``: no dataset yet (``--collection`` only): version, metadata, licenses;
- ``dataset, size limit``: a dataset with one file, ``rdr`` profile, a 5 GiB size limit
  (the largest file is read from the server's refusal), 1 GiB parts, streamed downloads;
- ``dataset, no limit``: the ``dataverse`` profile without a size limit (the probe at
  1000 parts is accepted, its multipart upload aborted).

Per case: the median wall time of the whole command (DataLad's start-up in-process excluded:
the command is called through the Python API), and the requests the sandbox's Dataverse saw
(``sandbox.dataverse.requests``), by kind. Requests to S3: multipart uploads opened by the
probes and left open afterwards (must be 0).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

GIB = 1024**3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import datalad.api as dl

    from conftest import DV  # noqa: E402  (the tests' thin client)
    from datalad_rdr.dataverse import Dataverse
    from datalad_rdr.register import register_bundle
    from datalad_rdr.sandbox.cli import Sandbox
    from datalad_rdr.upload import Uploader

    class Data:
        def __init__(self, data):
            self.data, self.size = data, len(data)

        def iter_range(self, start, end):
            yield self.data[start:end]

    cases = [("collection", "rdr", {}, False),
             ("dataset, size limit", "rdr",
              dict(max_file_size=5 * GIB, download_redirect=False), True),
             ("dataset, no limit", "dataverse", {}, True)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-check-") as work:
        ds = dl.create(os.path.join(work, "ds"), result_renderer="disabled")
        for name, profile, settings, with_dataset in cases:
            with Sandbox(profile, **settings) as sb:
                os.environ["DATALAD_CREDENTIAL_RDR_SECRET"] = sb.api_token
                ds.config.reload(force=True)  # DataLad reads the environment when loading
                pid = None
                if with_dataset:
                    client = Dataverse(sb.dataverse_url, sb.api_token)
                    pid = DV(sb).create_dataset()
                    uploaded = Uploader(client, pid).upload(Data(b"x" * 1000))
                    register_bundle(client, pid, "core.zip", uploaded, True, "a bundle")
                times, counts = [], None
                for _ in range(args.repeat):
                    before = len(sb.dataverse.requests)
                    started = time.perf_counter()
                    results = dl.rdr_export(
                        dataset=ds.path, check_server=True, url=sb.dataverse_url,
                        collection=sb.collection, pid=pid, result_renderer="disabled",
                        return_type="list", on_failure="ignore")
                    times.append(time.perf_counter() - started)
                    assert all(r["status"] == "ok" for r in results), results
                    counts = collections.Counter(
                        _kind(m, p) for m, p in sb.dataverse.requests[before:])
                left = sb.s3.list_multipart_uploads(Bucket=sb.dataverse.bucket)
                rows.append((name, statistics.median(times), sum(counts.values()), counts,
                             len(left.get("Uploads", []))))
                table = next(r["table"] for r in results if r.get("table"))
        print(table, "\n")
    print(f"{'case':<22} {'median s':>9} {'requests':>9}  open multipart  by kind")
    for name, seconds, total, counts, left in rows:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        print(f"{name:<22} {seconds:>9.3f} {total:>9}  {left:>14}  {kinds}")
    return 0


def _kind(method: str, path: str) -> str:
    if "uploadurls" in path:
        return "uploadurls"
    if "mpupload" in path:
        return "abort"
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return f"{method} {tail if not tail.startswith(('doi:', ':persistentId')) else path}"


if __name__ == "__main__":
    sys.exit(main())
