#!/usr/bin/env python
"""Benchmark ``datalad zenodo-sync`` against StepUp RepRep's ``srr-sync-zenodo``, in one run.

    python benchmarks/bench_zenodo_sync.py [--files 50] [--file-kb 20]

One DataLad dataset with ``--files`` annexed files; two configs that differ only in their
record id file, so each client keeps its own record on the same in-process sandbox Zenodo.
Both take StepUp 4's zenodo.yaml with the files on the command line. For each scenario,
each client is run once and the sandbox counts what reached Zenodo (``/_sandbox/stats``):
requests, changing requests (not GET), and the file bytes received. Scenarios:

- first upload (a new draft);
- resync of the draft, nothing changed  <- the issue's measure;
- resync of the draft, one file changed <- the issue's measure;
- the record published (by us, through the API, for both), resync with nothing changed;
- version bumped with one file changed (a new version).

``srr-sync-zenodo`` runs as a subprocess (its start-up, ~1 s, is in its time); ours runs in
this process through the Python API (DataLad's own start-up is not in its time).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

CONFIG = """\
path_record_id: {record_id}
endpoint: {endpoint}
metadata:
  title: 'Benchmark record of {n} files'
  version: '{version}'
  resource_type: dataset
  publisher: Zenodo
  license: cc-by-4.0
  keywords: [benchmark]
  creators:
    - family_name: Doe
      given_name: Jane
      identifiers:
        orcid: '0000-0002-1825-0097'
      affiliations:
        - name: KU Leuven
custom_fields:
  code_repository: https://github.com/example/bench
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--file-kb", type=int, default=20)
    args = parser.parse_args(argv)

    bindir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    srr = shutil.which("srr-sync-zenodo")
    if srr is None:
        sys.exit("srr-sync-zenodo not found: pip install 'stepup-reprep>=4'")
    from datalad.api import create

    import datalad_rdr.commands.zenodo_sync  # noqa: F401 - binds Dataset.zenodo_sync
    from datalad_rdr.sandbox.cli import Sandbox

    work = Path(tempfile.mkdtemp(prefix="bench-zenodo-sync-"))
    sb = Sandbox("rdr").start()
    rows = []
    try:
        token = sb.zenodo_settings.token
        ds = create(str(work / "ds"), result_renderer="disabled")
        root = Path(ds.path)
        names = [f"files/f{i:03d}.bin" for i in range(args.files)]
        for name in names:
            (root / name).parent.mkdir(exist_ok=True)
            (root / name).write_bytes(os.urandom(args.file_kb * 1000))

        def configs(version):
            for client, record_id in (("srr", ".srr-record-id.txt"),
                                      ("ours", ".ours-record-id.txt")):
                (root / f"{client}.yaml").write_text(CONFIG.format(
                    record_id=record_id, endpoint=sb.zenodo_url, n=args.files,
                    version=version))

        configs("1.0.0")
        ds.save(result_renderer="disabled")

        def run_srr():
            proc = subprocess.run([srr, "srr.yaml", *names], cwd=root, capture_output=True,
                                  text=True, env={**os.environ, "REPREP_ZENODO_TOKEN": token})
            if proc.returncode != 0:
                raise SystemExit(f"srr-sync-zenodo failed:\n{proc.stdout}{proc.stderr}")

        def run_ours():
            results = ds.zenodo_sync("ours.yaml", names, result_renderer="disabled",
                                     on_failure="ignore", return_type="list")
            bad = [r["message"] for r in results if r["status"] in ("error", "impossible")]
            if bad:
                raise SystemExit(f"datalad zenodo-sync failed: {bad}")

        def measure(scenario):
            os.environ["REPREP_ZENODO_TOKEN"] = token  # ours: StepUp's variable, too
            for client, run in (("srr-sync-zenodo", run_srr), ("datalad zenodo-sync", run_ours)):
                requests.delete(sb.zenodo_server.url + "/_sandbox/stats")
                t0 = time.perf_counter()
                run()
                seconds = time.perf_counter() - t0
                s = requests.get(sb.zenodo_server.url + "/_sandbox/stats").json()
                rows.append((scenario, client, s["requests"], s["changing"],
                             s["upload_bytes"], seconds))

        def change_one_file():
            path = root / names[0]
            path.unlink()  # an annexed file: replace it, do not write through the link
            path.write_bytes(os.urandom(args.file_kb * 1000))
            ds.save(result_renderer="disabled")

        total = args.files * args.file_kb * 1000
        measure(f"first upload ({args.files} files, {total / 1e6:.1f} MB)")
        measure("draft, nothing changed")
        change_one_file()
        measure("draft, one file changed")
        for record_file in (".srr-record-id.txt", ".ours-record-id.txt"):
            rid = (root / record_file).read_text().strip()
            r = requests.post(f"{sb.zenodo_url}/records/{rid}/draft/actions/publish",
                              headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
        measure("published, nothing changed")
        change_one_file()
        configs("1.1.0")
        measure("new version, one file changed")
    finally:
        sb.stop()
        shutil.rmtree(work, ignore_errors=True)

    header = ("scenario", "client", "requests", "changing", "bytes sent", "seconds")
    widths = [max(len(str(row[i])) if i < 2 else 10 for row in rows + [header])
              for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in
                     enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for scenario, client, n, changing, sent, seconds in rows:
        print("  ".join([scenario.ljust(widths[0]), client.ljust(widths[1]),
                         str(n).rjust(widths[2]), str(changing).rjust(widths[3]),
                         f"{sent:,}".rjust(widths[4]), f"{seconds:.2f}".rjust(widths[5])]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
