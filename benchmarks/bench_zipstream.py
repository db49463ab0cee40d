"""How much does streaming a bundle as a ZIP cost, next to just hashing its bytes?

Generates about --size-mb of BIDS-like data (mostly incompressible .nii.gz-like
random bytes, plus --text-share of JSON sidecars and TSV tables), then, in one
run, measures:

- baseline: read every file and compute MD5 + CRC32 of its bytes, which any
  upload with checksums must do;
- layout:   `layout_zip`, which reads STORED members for CRC32 and compresses
  DEFLATE members once to learn their size;
- stream:   `ZipLayout.iter_range` into a null sink (MD5 of the ZIP, CRC32
  and size checks of each member, DEFLATE again);
- stream, no MD5: the same for a consumer that hashes the bytes itself;
- stream+sha256: with a SHA256 checksum per member, as for git-annex SHA256E
  keys.

Target: (layout + stream) CPU <= 1.5 x baseline CPU; peak RSS <= 150 MB.
Files are warm in the page cache unless --cold (drops them before each phase).

    python benchmarks/bench_zipstream.py --size-mb 1000

``--small N`` instead lays out and streams N files of about 300 bytes (issue 13's
derivatives), checked by SHA256 as annexed files are, with their bytes kept from the layout
(the default) and read again (``keep=0``): microseconds a member for each pass.

    python benchmarks/bench_zipstream.py --small 50000
"""

import argparse
import hashlib
import json
import os
import random
import resource
import sys
import tempfile
import time
import zlib
from pathlib import Path

from datalad_rdr.zipstream import KEEP_BYTES, READ_SIZE, Checksum, Member, layout_zip


def generate(root: Path, size: int, text_share: float, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    paths, text_total, binary_total, n = [], 0, 0, 0
    while text_total + binary_total < size:
        sub = root / f"sub-{n // 4:03d}" / "func"
        sub.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{n // 4:03d}_task-rest_run-{n % 4 + 1}"
        if text_total < text_share * (text_total + binary_total + 1):
            sidecar = json.dumps({
                "RepetitionTime": 2.0, "TaskName": "rest", "EchoTime": rng.random(),
                "SliceTiming": [round(rng.random() * 2, 5) for _ in range(60)],
            }, indent=2).encode()
            rows = "".join(
                f"{i * 0.7:.2f}\t0.7\t{rng.choice(['go', 'stop', 'rest'])}\t"
                f"{rng.random():.4f}\t{rng.randint(0, 4)}\n"
                for i in range(rng.randint(5_000, 40_000)))
            header = "onset\tduration\ttrial_type\tresponse_time\tbutton\n"
            events = (header + rows).encode()
            for path, data in ((sub / f"{stem}_bold.json", sidecar),
                               (sub / f"{stem}_events.tsv", events)):
                path.write_bytes(data)
                paths.append(path)
                text_total += len(data)
        else:
            path = sub / f"{stem}_bold.nii.gz"
            remaining = rng.randint(8, 48) * 2**20
            with open(path, "wb") as f:
                while remaining:
                    block = rng.randbytes(min(8 * 2**20, remaining))
                    f.write(block)
                    remaining -= len(block)
            paths.append(path)
            binary_total += path.stat().st_size
        n += 1
    share = text_total / (text_total + binary_total)
    print(f"generated {len(paths)} files: {binary_total / 1e6:.0f} MB binary, "
          f"{text_total / 1e6:.1f} MB text ({share:.1%})")
    return paths


def drop_cache(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


class Timer:
    def __init__(self, label, nbytes, cold_paths=None):
        self.label, self.nbytes, self.cold_paths = label, nbytes, cold_paths

    def __enter__(self):
        if self.cold_paths:
            drop_cache(self.cold_paths)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        print(f"{self.label:16s} wall {self.wall:6.2f} s  cpu {self.cpu:6.2f} s  "
              f"{self.nbytes / self.wall / 1e6:7.0f} MB/s")


def baseline(paths):
    md5, buffer = hashlib.md5(), bytearray(READ_SIZE)
    view = memoryview(buffer)
    for p in paths:
        crc = 0
        with open(p, "rb") as f:
            while n := f.readinto(buffer):
                md5.update(view[:n])
                crc = zlib.crc32(view[:n], crc)
    return md5.hexdigest()


def members(root: Path, paths, sha256: bool):
    out = []
    for p in paths:
        checksum = None
        if sha256:
            digest = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(READ_SIZE):
                    digest.update(chunk)
            checksum = Checksum(hashlib.sha256, digest.hexdigest())
        out.append(Member(str(p.relative_to(root)), p.stat().st_size,
                          lambda p=p: open(p, "rb"), checksum))
    return out


def small_files(root: Path, count: int, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for n in range(count):
        sub = root / f"sub-{n // 400:03d}" / "func"
        sub.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"{rng.random():.5f}\t{rng.randint(0, 9)}\n" for _ in range(30))
        path = sub / f"sub-{n // 400:03d}_run-{n % 400:03d}_desc-confounds.tsv"
        path.write_bytes(rows.encode()[:rng.randint(200, 400)])
        paths.append(path)
    return paths


def small(root: Path, count: int):
    paths = small_files(root, count)
    checked = members(root, paths, sha256=True)
    for keep in (KEEP_BYTES, 0):
        cpu = {}
        for name, run in (("layout", None), ("stream", "iter_range"), ("parts", "iter_raw")):
            began = time.process_time()
            if run is None:
                layout = layout_zip(checked, mtime=1700000000, md5=False, keep=keep)
            else:
                digest = hashlib.md5()
                for chunk in getattr(layout, run)():
                    digest.update(chunk)
            cpu[name] = (time.process_time() - began) / count * 1e6
        print(f"keep={keep:<9d} " + "  ".join(f"{k} {v:5.1f} us" for k, v in cpu.items())
              + f"  MD5 {digest.hexdigest()}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{count} members, peak RSS {rss / 2**10:.0f} MB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1000)
    parser.add_argument("--text-share", type=float, default=0.03)
    parser.add_argument("--cold", action="store_true",
                        help="drop the files from the page cache before each phase")
    parser.add_argument("--dir", help="where to generate (default: a temporary one)")
    parser.add_argument("--small", type=int, metavar="N",
                        help="N small members, kept and read again, instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        if args.small:
            return small(root, args.small)
        paths = generate(root, args.size_mb * 10**6, args.text_share)
        total = sum(p.stat().st_size for p in paths)
        cold = paths if args.cold else None

        with Timer("baseline md5+crc", total, cold) as base:
            baseline(paths)
        plain = members(root, paths, sha256=False)
        with Timer("layout", total, cold) as lay:
            layout = layout_zip(plain, mtime=1700000000)
        with Timer("stream", layout.size, cold) as streamed:
            for _ in layout.iter_range():
                pass
        assert layout.md5
        unhashed = layout_zip(plain, mtime=1700000000, md5=False)
        with Timer("stream, no MD5", layout.size, cold):
            for _ in unhashed.iter_range():
                pass
        checked = members(root, paths, sha256=True)
        layout = layout_zip(checked, mtime=1700000000)
        with Timer("stream+sha256", layout.size, cold) as verified:
            for _ in layout.iter_range():
                pass

        ratio = (lay.cpu + streamed.cpu) / base.cpu
        print(f"ZIP {layout.size / 1e6:.0f} MB for {total / 1e6:.0f} MB of files "
              f"({len(paths)} members)")
        print(f"CPU (layout + stream) / (MD5 + CRC32): {ratio:.2f}  "
              f"[target <= 1.5]; with SHA256 checks: "
              f"{(lay.cpu + verified.cpu) / base.cpu:.2f}")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
        print(f"peak RSS {rss_mb:.0f} MB  [target <= 150]")


if __name__ == "__main__":
    main()
