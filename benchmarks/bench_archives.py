"""What does listing a hand-made ZIP, and reading one member, cost in requests and bytes?

Makes three ZIPs of --members members each (BIDS-like names, sizes spread around
--member-kb): one by 7-Zip (``7z a -tzip``, deflated; zipfile when 7-Zip is missing), one
by Python's zipfile (stored), one by zipfile written to a pipe (deflated, data
descriptors). Each is then read through a counting range reader (``--latency-ms`` is
slept per request, to show what the requests would cost over HTTP):

- list: the central directory, by `datalad_rdr.archives.open_archive`;
- member: the middle member and the largest one, by ``archive.read``.

and prints time, requests and bytes read next to the archive's and the member's size.

    python benchmarks/bench_archives.py                      # 3 x 10,000 members
    python benchmarks/bench_archives.py --latency-ms 50      # as over a slow link
"""

import argparse
import io
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from datalad_rdr.archives import Ranges, from_path, open_archive

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tools import SEVEN_ZIP  # noqa: E402


def generate(root: Path, count: int, member_kb: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = []
    for i in range(count):
        sub, kind = divmod(i, 10)
        name = f"sub-{sub:04d}/func/sub-{sub:04d}_run-{kind}_bold.json"
        size = max(1, int(rng.expovariate(1 / (member_kb * 1024))))
        text = "".join(f'"k{j}": {rng.random():.6f},\n' for j in range(size // 20 + 1))
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode()[:size])
        names.append(name)
    return names


class Pipe(io.RawIOBase):
    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


def make_zips(src: Path, names: list[str], out: Path) -> dict[str, Path]:
    zips = {}
    if SEVEN_ZIP:
        (out / "list.txt").write_text("\n".join(names) + "\n")
        path = out / "7zip-deflated.zip"
        subprocess.run([SEVEN_ZIP, "a", "-tzip", "-mx5", str(path), f"@{out / 'list.txt'}"],
                       cwd=src, check=True, capture_output=True)
        zips["7-Zip, deflated"] = path
    else:
        path = out / "zipfile-deflated.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for n in names:
                z.write(src / n, n)
        zips["zipfile, deflated (no 7-Zip)"] = path
    path = out / "zipfile-stored.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for n in names:
            z.write(src / n, n)
    zips["zipfile, stored"] = path
    path = out / "zipfile-descriptors.zip"
    with open(path, "wb") as f, zipfile.ZipFile(Pipe(f), "w", zipfile.ZIP_DEFLATED) as z:
        for n in names:
            with z.open(n, "w") as m:
                m.write((src / n).read_bytes())
    zips["zipfile to a pipe, data descriptors"] = path
    return zips


def slow(source: Ranges, latency: float) -> Ranges:
    def read(start, end):
        time.sleep(latency)
        return source.read(start, end)

    def stream(start, end):
        time.sleep(latency)
        yield from source.stream(start, end)

    return Ranges(source.size, read, stream, name=source.name)


def mib(n: int) -> str:
    return f"{n / 2**20:9.2f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=10_000)
    ap.add_argument("--member-kb", type=float, default=8)
    ap.add_argument("--latency-ms", type=float, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        names = generate(tmp / "src", args.members, args.member_kb)
        zips = make_zips(tmp / "src", names, tmp)
        print(f"{args.members} members, latency {args.latency_ms} ms per request\n")
        for label, path in zips.items():
            source = slow(from_path(path), args.latency_ms / 1000)
            t0 = time.perf_counter()
            archive = open_archive(source)
            listed = time.perf_counter() - t0
            size = os.path.getsize(path)
            print(f"{label}: {path.name}, {mib(size)}, {len(archive)} members")
            print(f"  list    {listed * 1000:8.1f} ms  {source.requests} requests  "
                  f"{mib(source.bytes_read)} read = {source.bytes_read / size:6.2%} of the "
                  f"archive (central directory {mib(archive.cd_size)})")
            files = [m for m in archive if not m.is_dir]
            for what, m in (("middle", files[len(files) // 2]),
                            ("largest", max(files, key=lambda m: m.compressed_size))):
                requests, got = source.requests, source.bytes_read
                t0 = time.perf_counter()
                archive.read(m, io.BytesIO())
                took = time.perf_counter() - t0
                read_ = source.bytes_read - got
                print(f"  {what:7} {took * 1000:8.1f} ms  "
                      f"{source.requests - requests} request   {read_:9d} B read for "
                      f"{m.compressed_size} B packed, {m.size} B "
                      f"(+{read_ - m.compressed_size} B: local header and slack)")
            print()


if __name__ == "__main__":
    main()
