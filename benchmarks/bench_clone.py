"""``datalad rdr-clone`` of a hand-made record, against downloading its ZIPs.

A record of three ZIPs (7-Zip ``7z a -tzip``, deflated; zipfile when 7-Zip is missing)
with --members members in all (BIDS-like JSON sidecars from bench_archives.py), uploaded
into the sandbox with upstream python-dvuploader and published. Then:

- clone: ``datalad rdr-clone`` of the record (time, bytes the store served, requests),
  next to downloading the three ZIPs (time, bytes);
- get: ``datalad get`` of one member (time, bytes served), next to downloading its ZIP
  and ``7z x`` of that member.

    python benchmarks/bench_clone.py                  # 3 ZIPs, 10,000 members
    python benchmarks/bench_clone.py --members 3000
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from bench_archives import generate  # noqa: E402
from conftest import DV  # noqa: E402
from tools import SEVEN_ZIP  # noqa: E402

from datalad_rdr.dataverse import Dataverse  # noqa: E402
from datalad_rdr.sandbox.cli import Sandbox  # noqa: E402


def make_zips(src: Path, names: list[str], out: Path) -> list[Path]:
    import zipfile

    thirds = [names[i::3] for i in range(3)]
    zips = []
    for i, part in enumerate(thirds):
        target = out / f"part-{i + 1}.zip"
        if SEVEN_ZIP:
            listing = out / f"list-{i}.txt"
            listing.write_text("\n".join(part) + "\n")
            subprocess.run([SEVEN_ZIP, "a", "-tzip", str(target), f"@{listing}"], cwd=src,
                           check=True, capture_output=True)
            listing.unlink()
        else:
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in part:
                    zf.write(src / name, name)
        zips.append(target)
    return zips


def served(sb) -> int:
    return sum(sb.gate.stats.bytes_served.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--member-kb", type=float, default=8.0)
    args = parser.parse_args()
    import datalad.api as dl
    import dvuploader as dv_up

    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    with tempfile.TemporaryDirectory(prefix="bench-clone-") as tmp, \
            Sandbox("dataverse", part_size=64 * 2**20) as sb:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        (tmp / "up").mkdir()
        names = generate(tmp / "src", args.members, args.member_kb)
        zips = make_zips(tmp / "src", names, tmp / "up")
        total = sum(z.stat().st_size for z in zips)
        dv = DV(sb)
        pid = dv.create_dataset()
        dv_up.DVUploader(files=[dv_up.File(filepath=str(z)) for z in zips]).upload(
            persistent_id=pid, dataverse_url=sb.dataverse_url + "/",
            api_token=sb.api_token, n_parallel_uploads=3)
        r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                    params={"persistentId": pid, "type": "major"})
        assert r.status_code == 200, r.text
        Dataverse(sb.dataverse_url, None).wait_unlocked(pid)
        ids = {f["label"]: f["dataFile"]["id"] for f in dv.files(pid, "1.0")}
        print(f"record: {len(zips)} ZIPs, {args.members} members, {total:,} bytes")

        sb.gate.stats.reset()
        t = time.monotonic()
        results = dl.rdr_clone(source=pid, path=str(tmp / "clone"), url=sb.dataverse_url,
                               result_renderer="disabled", return_type="list")
        clone_s = time.monotonic() - t
        assert results[-1]["status"] == "ok", results[-1]
        clone_bytes, clone_gets = served(sb), sb.gate.stats.requests["GET"]

        sb.gate.stats.reset()
        t = time.monotonic()
        for z in zips:
            with requests.get(f"{sb.dataverse_url}/api/access/datafile/{ids[z.name]}",
                              stream=True, timeout=300) as resp, \
                    open(tmp / f"dl-{z.name}", "wb") as out:
                for chunk in resp.iter_content(2**20):
                    out.write(chunk)
        download_s = time.monotonic() - t
        download_bytes = served(sb)
        print(f"clone:    {clone_s:7.2f} s, {clone_bytes:>12,} bytes served, "
              f"{clone_gets} GETs on the store")
        print(f"download: {download_s:7.2f} s, {download_bytes:>12,} bytes served "
              f"(the 3 ZIPs; {download_bytes / max(clone_bytes, 1):,.0f}x the clone's)")

        member = names[len(names) // 2]  # in part-1/2/3 by position
        archive = f"part-{len(names) // 2 % 3 + 1}"
        env = {k: v for k, v in os.environ.items() if "CREDENTIAL" not in k}
        sb.gate.stats.reset()
        t = time.monotonic()
        subprocess.run(["datalad", "get", f"{archive}/{member}"], cwd=tmp / "clone",
                       check=True, capture_output=True, env=env)
        get_s, get_bytes = time.monotonic() - t, served(sb)
        size = (tmp / "src" / member).stat().st_size
        print(f"get:      {get_s:7.2f} s, {get_bytes:>12,} bytes served for a member of "
              f"{size:,} bytes")
        if SEVEN_ZIP:
            sb.gate.stats.reset()
            t = time.monotonic()
            with requests.get(f"{sb.dataverse_url}/api/access/datafile/"
                              f"{ids[archive + '.zip']}", timeout=300) as resp:
                (tmp / "whole.zip").write_bytes(resp.content)
            subprocess.run([SEVEN_ZIP, "x", "-y", f"-o{tmp / 'x'}", str(tmp / "whole.zip"),
                            member], check=True, capture_output=True)
            x_s = time.monotonic() - t
            print(f"download + 7z x: {x_s:7.2f} s, {served(sb):>12,} bytes served")


if __name__ == "__main__":
    main()
