#!/usr/bin/env python
"""Benchmark ``datalad rdr-export`` against the RDR guide's manual route, in one run.

    python benchmarks/bench_export.py [--size-gb 4] [--quick] [--cprofile]

What it does, on a generated BIDS-like DataLad dataset (many small JSON/TSV files, large
incompressible .nii.gz), each client a subprocess of this script and each server a separate
``datalad-rdr-sandbox`` process (so server CPU is never counted as client CPU):

- anchor: read the same bytes and MD5 + CRC32 them (one pass, one core);
- ours:   ``datalad rdr-export -d DS --url URL --collection ALIAS``;
- manual: the RDR guide's route with the same bundles as ours sent: ``7zz a -tzip NAME.zip
  @files`` per bundle (7zz follows the annex symlinks by default; p7zip's ``7z`` would need
  ``-l``, which 7zz refuses), then upstream python-dvuploader uploading the ZIPs (direct
  upload).

Client CPU (user+sys) and peak RSS come from ``os.wait4`` of each client process (they
include the descendants it waited for: git, git-annex; peak RSS is that of the largest single
process). With psutil installed, the summed RSS of the client's process tree is sampled too.
Temporary disk is the growth of the client's TMPDIR and of the ZIP folder, sampled, plus
what is left in the dataset; the file system's used bytes are sampled as a cross-check (the
sandbox keeps its objects in /dev/shm when there is room, so they do not count).

Server profile: ``rdr`` (default) emulates RDR's Swift S3, which refuses ``x-amz-tagging``
with 501. Upstream dvuploader sends that header, so on ``rdr`` it runs with the header
dropped from its requests -- the one change of KU Leuven's fork (libis/python-dvuploader
d2ce7f2), which is what RDR users run. ``--server-profile dataverse`` runs upstream
dvuploader unmodified against a tagging S3 store instead (ours then sends the header too).

Everything it creates (work dir, sandbox data, sandbox processes) is removed at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import psutil
except ImportError:  # optional: only for the summed RSS of the process tree
    psutil = None

MB = 1000**2
GB = 1000**3
BIN = Path(sys.executable).parent  # the venv's bin: datalad, datalad-rdr-sandbox, dvuploader
SEVEN_ZIP = shutil.which("7zz") or "/usr/bin/7zz"
# p7zip's `7z` (16.02) stores symlinks as links unless given -l. 7-Zip's own `7zz` (21+, the
# Debian package 7zip) follows them by default (-snl would store links) and refuses -l as an
# unknown switch.
FOLLOW_LINKS: list[str] = []

TARGETS = {  # name: (description, test); wall and cpu as issue 13 sets them, at 4 GB
    "wall": "wall manual / ours >= 3",
    "cpu": "client CPU/GB ours / floor <= 1.25",
    "rss": "peak RSS ours <= 150 MB",
    "disk": "temp disk ours = 0",
}

# The anchor: the cost of reading the bytes once and hashing them as a server or a careful
# client must at least (MD5 for Dataverse, CRC32 for the ZIP). Reads of 128 KiB into one
# buffer, the cheapest measured here: a pass over 4 GB of cached files costs 0.5 s of kernel
# copy in 128 KiB reads, 2.1 s in 8 MiB reads (benchmarks/README.md, seventh pass).
ANCHOR = r"""
import hashlib, sys, zlib
buf = bytearray(2**17); view = memoryview(buf); total = 0
for path in open(sys.argv[1], encoding="utf-8").read().split("\0"):
    if not path:
        continue
    md5, crc = hashlib.md5(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            md5.update(view[:n]); crc = zlib.crc32(view[:n], crc); total += n
print(total)
"""

# The floor: what our export must compute per byte whatever its code -- the MD5 of the ZIP
# (Dataverse's checksum), the MD5 of every annexed file against its key (nothing corrupt is
# published), and CRC32 (the ZIP) -- in one pass, one core, with the CRC-32 the export uses
# (ISA-L's, a quarter of zlib's cost). Paths after "--" are in git.
FLOOR = r"""
import hashlib, sys
from isal import isal_zlib as zlib
buf = bytearray(2**17); view = memoryview(buf); total = 0; annexed = True
for path in open(sys.argv[1], encoding="utf-8").read().split("\0"):
    if path == "--":
        annexed = False
        continue
    if not path:
        continue
    md5, key, crc = hashlib.md5(), hashlib.md5(), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            md5.update(view[:n]); crc = zlib.crc32(view[:n], crc); total += n
            if annexed:
                key.update(view[:n])
print(total)
"""

# dvuploader's CLI; on the rdr profile without x-amz-tagging, as KU Leuven's fork does.
DVUPLOADER = r"""
import os, sys
if os.environ.get("BENCH_DROP_TAGGING") == "1":
    import httpx
    _send = httpx.AsyncClient.send
    async def send(self, request, **kw):
        if "x-amz-tagging" in request.headers:
            del request.headers["x-amz-tagging"]
        return await _send(self, request, **kw)
    httpx.AsyncClient.send = send
from dvuploader.cli import app
sys.argv[0] = "dvuploader"
app()
"""

# ours under cProfile, with a CPU or wall clock (--cprofile [cpu|wall]).
CPROFILE = r"""
import cProfile, sys, time
from datalad.cli.main import main
out = sys.argv.pop(1)
clock = {"cpu": time.process_time, "wall": time.perf_counter}[sys.argv.pop(1)]
sys.argv[0] = "datalad"
profiler = cProfile.Profile(clock)
try:
    profiler.runcall(main)
except SystemExit:
    pass
finally:
    profiler.dump_stats(out)
"""


# -- measuring -------------------------------------------------------------------------

def dir_bytes(path: Path) -> int:
    """Disk blocks used under ``path`` (symlinks not followed)."""
    total, stack = 0, [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:
                        pass
        except (FileNotFoundError, NotADirectoryError):
            pass
    return total


def machine_busy() -> float:
    """CPU seconds all processes of the machine have used since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def fs_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def baseline(watched: list[Path], fs_path: Path) -> tuple[int, int]:
    return sum(dir_bytes(p) for p in watched), fs_used(fs_path)


class Sampler:
    """Peak growth of some folders, of the file system, and of a process tree's RSS."""

    def __init__(self, watched: list[Path], fs_path: Path, interval: float = 0.25,
                 base: tuple[int, int] | None = None):
        self.watched, self.fs_path, self.interval = watched, fs_path, interval
        self.base_dirs, self.base_fs = base or baseline(watched, fs_path)
        self.peak_dirs = self.peak_fs = self.peak_tree_rss = 0
        self.pid = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, pid: int | None = None):
        self.pid = pid
        self._thread.start()
        return self

    def _sample(self):
        self.peak_dirs = max(self.peak_dirs, sum(dir_bytes(p) for p in self.watched)
                             - self.base_dirs)
        self.peak_fs = max(self.peak_fs, fs_used(self.fs_path) - self.base_fs)
        if psutil is not None and self.pid is not None:
            try:
                root = psutil.Process(self.pid)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                return
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_tree_rss = max(self.peak_tree_rss, rss)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()


@dataclass
class Run:
    """One or more client processes run one after the other."""

    wall: float = 0.0
    cpu: float = 0.0
    maxrss: int = 0  # bytes, largest single process
    tree_rss: int = 0  # bytes, sampled sum over the tree (psutil)
    disk_dirs: int = 0  # peak growth of the watched folders
    disk_fs: int = 0  # peak growth of the file system (noisy: the whole machine)
    busy: float = 0.0  # CPU seconds used by the whole machine meanwhile
    steps: list = field(default_factory=list)

    def add(self, other: "Run", label: str):
        self.wall += other.wall
        self.cpu += other.cpu
        self.maxrss = max(self.maxrss, other.maxrss)
        self.tree_rss = max(self.tree_rss, other.tree_rss)
        self.disk_dirs = max(self.disk_dirs, other.disk_dirs)
        self.disk_fs = max(self.disk_fs, other.disk_fs)
        self.busy += other.busy
        self.steps.append((label, other))


def run_client(cmd: list[str], *, log: Path, watched: list[Path], fs_path: Path,
               cwd: Path | None = None, env: dict | None = None,
               base: tuple[int, int] | None = None) -> Run:
    """Run ``cmd`` to its end; wall, CPU and peak RSS of it and its waited-for children.

    Disk growth is counted from ``base`` (see `baseline`), default: from the start.
    """
    sampler = Sampler(watched, fs_path, base=base)
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n".encode())
        out.flush()
        began, busy = time.perf_counter(), machine_busy()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler.start(proc.pid)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall, busy = time.perf_counter() - began, machine_busy() - busy
        proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.stop()
    if proc.returncode:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}; end of {log}:\n{tail}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024,
               sampler.peak_tree_rss, sampler.peak_dirs, sampler.peak_fs, busy)


# -- the sandbox -----------------------------------------------------------------------

class SandboxProcess:
    """``datalad-rdr-sandbox`` in its own process, its data in ``data_dir``."""

    def __init__(self, profile: str, data_dir: Path, log: Path, part_size: int | None = None):
        self.data_dir = data_dir
        data_dir.mkdir(parents=True)
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "datalad-rdr-sandbox"), "--profile", profile, "--data-dir",
             str(data_dir)] + (["--part-size", str(part_size)] if part_size else []),
            stdout=subprocess.PIPE, stderr=self._log,
            stdin=subprocess.DEVNULL)
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"the sandbox did not start; see {log}")
        self.info = json.loads(line)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # drain
        self.cpu = None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                _, status, usage = os.wait4(self.proc.pid, 0)
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu = usage.ru_utime + usage.ru_stime
            except ChildProcessError:
                pass
            except BaseException:
                self.proc.kill()
                raise
        self._log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def server_files(info: dict, pid: str) -> dict[str, int]:
    import requests

    r = requests.get(f"{info['dataverse_url']}/api/datasets/:persistentId/versions/"
                     f":draft/files", params={"persistentId": pid},
                     headers={"X-Dataverse-key": info["api_token"]}, timeout=60)
    r.raise_for_status()
    return {f["label"]: f["dataFile"]["filesize"] for f in r.json()["data"]}


# -- the routes ------------------------------------------------------------------------

@dataclass
class SentBundle:
    filename: str
    paths: list[str]
    nbytes: int


def anchor(ds: Path, plan, ws) -> Run:
    listing = ws.lists / "all.nul"
    listing.write_text("\0".join(str(ds / f.path) for b in plan.bundles for f in b.files),
                       encoding="utf-8")
    return run_client([sys.executable, "-c", ANCHOR, listing], log=ws.log,
                      watched=[ws.tmp], fs_path=ws.root)


def floor(ds: Path, plan, ws) -> Run:
    files = [f for b in plan.bundles for f in b.files]
    listing = ws.lists / "floor.nul"
    listing.write_text("\0".join([str(ds / f.path) for f in files if f.key] + ["--"]
                                 + [str(ds / f.path) for f in files if not f.key]),
                       encoding="utf-8")
    return run_client([sys.executable, "-c", FLOOR, listing], log=ws.log,
                      watched=[ws.tmp], fs_path=ws.root)


def ours(ds: Path, plan, ws, profile: str, cap: int | None,
         cprofile: tuple[Path, str] | None = None, part_size: int | None = None
         ) -> tuple[Run, list[SentBundle], float | None]:
    sandbox = SandboxProcess(profile, ws.new_sandbox_dir(), ws.log, part_size)
    try:
        info = sandbox.info
        env = dict(os.environ, DATALAD_CREDENTIAL_RDR_SECRET=info["api_token"],
                   TMPDIR=str(ws.tmp), PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
        args = ["rdr-export", "-d", ds, "--url", info["dataverse_url"], "--collection",
                info["collection"]] + (["--max-bundle-size", cap] if cap else [])
        if cprofile:
            cmd = [sys.executable, "-c", CPROFILE, *cprofile, *args]
        else:
            cmd = [BIN / "datalad", *args]
        before, log_at = dir_bytes(ds), ws.log.stat().st_size if ws.log.exists() else 0
        run = run_client(cmd, log=ws.log, watched=[ws.tmp], fs_path=ws.root, env=env)
        # what is left in the dataset: the manifest commit (permanent, not temporary)
        run.left_in_dataset = dir_bytes(ds) - before
        with open(ws.log, "rb") as f:
            f.seek(log_at)
            run.warnings = [line for line in f.read().decode(errors="replace").splitlines()
                            if "splitting" in line or "WARNING" in line]
        manifest = json.loads((ds / ".datalad/rdr/manifest.json").read_text())
        files = server_files(info, manifest["pid"])
    finally:
        sandbox.stop()
    # The bundles ours really sent (it may split a planned bundle, see TooSlowForUrlLifetime):
    # the manual route zips the same ones.
    # the members are in members.tsv (the compact manifest): read through the manifest module
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from datalad_rdr import history, manifest as mf

    sent = [SentBundle(b.filename, [m.path for m in b.members], sum(m.size for m in b.members))
            for b in mf.load(ds).bundles]
    # the README and documentation go up as separate public files, beside the bundles
    expected = {b["filename"]: b["size"] for b in manifest["bundles"]}
    expected.update({d["label"]: d["size"] for d in manifest.get("documents", [])})
    # and the dataset's history (not in the manifest: it holds the manifest's commit)
    files.pop(history.NAME, None)
    if files != expected:
        raise RuntimeError(f"ours: the server holds {files}, not the manifest's files "
                           f"{expected}")
    return run, sent, sandbox.cpu


def manual(ds: Path, bundles: list[SentBundle], ws, profile: str, jobs: int,
           part_size: int | None = None) -> tuple[Run, dict, float | None]:
    total = Run()
    zips = []
    watched = [ws.tmp, ws.zips]
    base = baseline(watched, ws.root)  # the ZIPs stay until they are uploaded
    for b in bundles:
        target = ws.zips / b.filename
        listing = ws.lists / f"{b.filename}.txt"
        listing.write_text("".join(f"{p}\n" for p in b.paths), encoding="utf-8")
        # The guide's `7z a bundle.zip folder/` with the file list of our bundle, archiving
        # the content behind the annex symlinks (checked below), not the links.
        step = run_client([SEVEN_ZIP, "a", "-tzip", *FOLLOW_LINKS, "-bd", target,
                           f"@{listing}"],
                          cwd=ds, log=ws.log, watched=watched, fs_path=ws.root,
                          env=dict(os.environ, TMPDIR=str(ws.tmp)), base=base)
        total.add(step, f"7zz {b.filename}")
        zips.append(target)
    zip_bytes = sum(z.stat().st_size for z in zips)
    content = sum(b.nbytes for b in bundles)
    if zip_bytes < 0.5 * content:
        raise RuntimeError(f"7-Zip wrote {zip_bytes} bytes of ZIP for {content} bytes of "
                           f"content: it archived the annex symlinks, not the data")
    total.zip_bytes = zip_bytes

    sandbox = SandboxProcess(profile, ws.new_sandbox_dir(), ws.log, part_size)
    try:
        info = sandbox.info
        # The draft is made beforehand (in the web UI, in the guide); not timed.
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from datalad_rdr import metadata
        from datalad_rdr.dataverse import Dataverse
        from datalad_rdr.plan import make_plan

        client = Dataverse(info["dataverse_url"], info["api_token"])
        mapping = metadata.server_mapping(ds, client, metadata.load(ds), make_plan(ds),
                                          info["dataverse_url"])
        pid = client.create_dataset(info["collection"], mapping.draft())
        env = dict(os.environ, TMPDIR=str(ws.tmp),
                   BENCH_DROP_TAGGING="1" if profile == "rdr" else "0")
        cmd = ([sys.executable, "-c", DVUPLOADER] if profile == "rdr"
               else [BIN / "dvuploader"])
        step = run_client(cmd + [*zips, "--pid", pid, "--api-token", info["api_token"],
                                 "--dataverse-url", info["dataverse_url"] + "/",
                                 "--n-jobs", str(jobs)],
                          log=ws.log, watched=watched, fs_path=ws.root, env=env, base=base)
        total.add(step, "dvuploader")
        files = server_files(info, pid)
    finally:
        sandbox.stop()
    want = {z.name: z.stat().st_size for z in zips}
    if files != want:
        raise RuntimeError(f"manual: the server holds {files}, not {want}")
    for z in zips:
        z.unlink()
    return total, files, sandbox.cpu


# -- workspace -------------------------------------------------------------------------

class Workspace:
    def __init__(self, base: str | None, size: int):
        self.root = Path(tempfile.mkdtemp(prefix="rdr-bench-", dir=base))
        self.tmp = self.root / "tmp"
        self.zips = self.root / "zips"
        self.lists = self.root / "lists"
        for p in (self.tmp, self.zips, self.lists):
            p.mkdir()
        self.log = self.root / "bench.log"
        # The sandbox keeps S3 objects in its data dir: on tmpfs they stay out of the
        # file system whose growth is measured, if there is room for one export.
        shm = Path("/dev/shm")
        room = shm.is_dir() and shutil.disk_usage(shm).free > 1.3 * size + 512 * MB
        self.sandbox_base = Path(tempfile.mkdtemp(prefix="rdr-bench-s3-",
                                                  dir=shm if room else self.root))
        self.sandbox_on_tmpfs = room
        self._n = 0

    def new_sandbox_dir(self) -> Path:
        self._n += 1
        return self.sandbox_base / f"sb{self._n}"

    def cleanup(self, keep: bool = False):
        shutil.rmtree(self.sandbox_base, ignore_errors=True)
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


def code_version() -> str:
    """The commit of datalad_rdr under test, and a hash of its sources as they are now."""
    import hashlib

    package = Path(__file__).resolve().parent.parent / "datalad_rdr"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "-C", str(package), "describe", "--always",
                                 "--dirty"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    return f"{commit or '?'}, sources {digest.hexdigest()[:12]}"


def same_code(a: str, b: str) -> bool:
    return a.rsplit(" ", 1)[-1] == b.rsplit(" ", 1)[-1]  # the sources, not the commit


# -- report ----------------------------------------------------------------------------

def fmt(value, unit=""):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{value}{unit}"


def report(size_label, content, a, o, m, server_cpu, ws, profile, jobs, gen_wall, load0,
           version):
    gb = content / GB
    print(f"\n== datalad-rdr export benchmark: {size_label}, {content / MB:.0f} MB of content "
          f"in {len(o.sent)} bundles ({o.nfiles} files), server profile '{profile}', "
          f"{os.cpu_count()} CPUs ==")
    print(f"(dataset generated in {gen_wall:.0f} s; sandbox data on "
          f"{'tmpfs' if ws.sandbox_on_tmpfs else 'the measured file system'}; load average "
          f"{load0:.1f} before, {os.getloadavg()[0]:.1f} now: wall times are only "
          "comparable on an otherwise idle machine)")
    now = code_version()
    print(f"datalad_rdr under test: {version}" + ("" if same_code(now, version) else
          f" -- CHANGED during the run, now {now}: the figures mix two versions"))
    rows = [
        ("wall time (s)", a.wall, o.wall, m.wall),
        ("client CPU user+sys (s)", a.cpu, o.cpu, m.cpu),
        ("client CPU per GB (s/GB)", a.cpu / gb, o.cpu / gb, m.cpu / gb),
        ("peak RSS, largest process (MB)", a.maxrss / MB, o.maxrss / MB, m.maxrss / MB),
    ]
    if psutil is not None:
        rows.append(("peak RSS, process tree sum (MB)", a.tree_rss / MB, o.tree_rss / MB,
                     m.tree_rss / MB))
    rows += [
        ("temp disk: tmp+ZIP dirs peak (MB)", a.disk_dirs / MB, o.disk_dirs / MB,
         m.disk_dirs / MB),
        ("temp disk: file system peak (MB)*", a.disk_fs / MB, o.disk_fs / MB,
         m.disk_fs / MB),
        ("server CPU (s, sandbox process)", None, server_cpu.get("ours"),
         server_cpu.get("manual")),
        ("other processes' CPU meanwhile (s)**", max(a.busy - a.cpu, 0.0),
         max(o.busy - o.cpu - (server_cpu.get("ours") or 0), 0.0),
         max(m.busy - m.cpu - (server_cpu.get("manual") or 0), 0.0)),
    ]
    w = max(len(r[0]) for r in rows) + 2
    print(f"{'':<{w}}{'anchor':>10}{'ours':>10}{'manual':>10}")
    for label, *vals in rows:
        print(f"{label:<{w}}" + "".join(f"{fmt(v):>10}" for v in vals))
    print("* used bytes of the whole file system, sampled: includes anything else the "
          "machine writes meanwhile")
    print("** machine CPU (/proc/stat) minus client and server: other work on the machine "
          "that slows wall times (CPU times are not affected much)")
    print("manual route steps: " + "; ".join(
        f"{label} {r.wall:.1f} s wall / {r.cpu:.1f} s CPU" for label, r in _merge(m.steps)))
    print(f"manual route ZIPs: {m.zip_bytes / MB:.1f} MB written (7zz, default "
          f"compression, links followed), uploaded by dvuploader --n-jobs {jobs}"
          + (" with x-amz-tagging dropped (as libis/python-dvuploader)"
             if profile == "rdr" else " (upstream, unmodified)"))
    if o.sent != o.planned:
        print(f"NOTE: ours sent {len(o.sent)} bundles ({', '.join(o.sent)}) where the plan "
              f"has {len(o.planned)} ({', '.join(o.planned)}); the manual route zips the "
              "bundles ours sent. Ours said:")
        for line in o.warnings:
            print(f"  {line.strip()}")
    print(f"ours left in the dataset: {o.left_in_dataset / 1000:.0f} kB (manifest commit, "
          "permanent, not temporary)")

    ratio_wall = m.wall / o.wall
    ratio_cpu = o.cpu / a.floor.cpu
    disk = max(o.disk_dirs, 0)
    checks = [
        ("wall", f"{ratio_wall:.2f}x", ratio_wall >= 3),
        ("cpu", f"{ratio_cpu:.2f}x ({o.cpu / gb:.2f} vs {a.floor.cpu / gb:.2f} s/GB)",
         ratio_cpu <= 1.25),
        ("rss", f"{o.maxrss / MB:.0f} MB", o.maxrss <= 150 * MB),
        ("disk", f"{disk / MB:.1f} MB (file system: {o.disk_fs / MB:.1f} MB)", disk < MB),
    ]
    print(f"floor (ZIP MD5 + annex key MD5 + CRC32, one pass): {a.floor.cpu / gb:.2f} s/GB "
          f"= {a.floor.cpu / a.cpu:.2f}x the anchor; ours / floor = {o.cpu / a.floor.cpu:.2f}x")
    print("\ntargets:")
    for key, value, ok in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {TARGETS[key]:<38} {value}")
    return all(ok for *_, ok in checks)


def _merge(steps):
    merged = {}
    for label, r in steps:
        key = "7zz" if label.startswith("7zz") else label
        prev = merged.get(key, Run())
        merged[key] = Run(prev.wall + r.wall, prev.cpu + r.cpu)
    return merged.items()


STAGES = [  # (file name, function): where ours spends its time, cumulative
    ("main.py", "main"),
    ("<frozen importlib._bootstrap>", "_find_and_load"),
    ("export.py", "run_export"), ("plan.py", "make_plan"), ("export.py", "_unavailable"),
    ("content.py", "fetch"), ("content.py", "members"), ("zipstream.py", "layout_zip"),
    ("upload.py", "upload"), ("upload.py", "_put"), ("dataverse.py", "upload_urls"),
    ("dataverse.py", "complete_multipart"), ("register.py", "register_bundle"),
    ("export.py", "_save"), ("~", "<built-in method time.sleep>"),
]


def print_profile(path: Path, clock: str, run: Run):
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt or 1e-9
    if clock == "cpu":
        print(f"\n== ours under cProfile, CPU clock: the datalad process {total:.1f} s, "
              f"{run.cpu:.1f} s with its git/git-annex children (profiling inflates both) ==")
    else:
        print(f"\n== ours under cProfile, wall clock: {total:.1f} s in the datalad process "
              f"({run.wall:.1f} s wall for the command; profiling inflates both) ==")
    unit = "CPU s" if clock == "cpu" else "wall s"
    print(f"{'own ' + unit:>10} {'share':>6}  function [callers of hashing/CRC]")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    for (file, line, name), (cc, nc, tt, ct, callers) in rows:
        where = name if file == "~" else f"{Path(file).name}:{line} {name}"
        print(f"{tt:>10.2f} {tt / total:>6.1%}  {where}")
        if file == "~" and ("hash" in name.lower() or "crc32" in name):
            for (cf, cl, cn), cvals in sorted(callers.items(), key=lambda kv: -kv[1][2]):
                if cvals[2] >= 0.005:
                    print(f"{cvals[2]:>17.2f}  <- {Path(cf).name}:{cl} {cn}")
    print(f"{'cum ' + unit:>10} {'share':>6}  stage")
    for want_file, want_name in STAGES:
        best = None
        for (file, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
            if name == want_name and Path(file).name == want_file:
                if best is None or ct > best[1]:
                    best = (f"{Path(file).name}:{line} {name}", ct)
        if best and want_file == "main.py":
            best = ("whole command (datalad.cli.main)", best[1])
        if best and want_name == "_find_and_load":
            best = ("imports (importlib _find_and_load)", best[1])
        if best:
            print(f"{best[1]:>10.2f} {best[1] / total:>6.1%}  {best[0]}")


# -- main ------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=4.0,
                        help="content of the generated dataset (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a ~300 MB dataset, for a fast check")
    parser.add_argument("--subjects", type=int,
                        help="subjects (default: 128, or 32 with --quick)")
    parser.add_argument("--max-bundle-size", type=int,
                        help="--max-bundle-size for ours, and the same bundles for manual")
    parser.add_argument("--server-profile", choices=("rdr", "dataverse"), default="rdr",
                        help="sandbox profile (default: %(default)s; see the docstring)")
    parser.add_argument("--part-size", type=int,
                        help="the server's multipart part size in bytes, for both routes "
                             "(default: the sandbox's 1 GiB, as RDR's); smaller parts "
                             "make a small run send its bundles in parts, as large "
                             "bundles go")
    parser.add_argument("--dv-jobs", type=int, default=1,
                        help="dvuploader --n-jobs (default: %(default)s, its default)")
    parser.add_argument("--cprofile", nargs="?", const="cpu", choices=("cpu", "wall"),
                        help="then export once more under cProfile and show where the "
                             "client's CPU time (default) or wall time goes")
    parser.add_argument("--workdir", help="parent of the temporary work dir "
                                          "(default: $TMPDIR or /tmp)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work dir (dataset, logs) for a look afterwards; "
                             "servers and their data are removed anyway")
    args = parser.parse_args(argv)

    size = int((0.3 if args.quick else args.size_gb) * GB)
    subjects = args.subjects or (32 if args.quick else 128)
    per_subject = size / subjects
    nifti = int(per_subject * 0.24)  # three raw images per subject ...
    derivative = int(per_subject * 0.28)  # ... and one fmriprep image
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"  # git-annex, datalad
    if not Path(SEVEN_ZIP).exists():
        parser.error("7zz (Debian package 7zip) is needed for the manual route")

    ws = Workspace(args.workdir, size)
    stop = lambda *_: sys.exit(130)  # noqa: E731  (run the finally: clean up)
    signal.signal(signal.SIGTERM, stop)
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from datalad_rdr.demo import make_bids_dataset
        from datalad_rdr.plan import make_plan

        say = lambda text: print(text, flush=True)  # noqa: E731
        say(f"work dir {ws.root}; generating {size / MB:.0f} MB: {subjects} subjects, "
            f"3 x {nifti / MB:.1f} MB raw + {derivative / MB:.1f} MB fmriprep each")
        began = time.perf_counter()
        ds = make_bids_dataset(ws.root / "ds", subjects=subjects, nifti_bytes=nifti,
                               derivatives={"fmriprep": derivative})
        gen_wall = time.perf_counter() - began
        plan = make_plan(ds, cap=args.max_bundle_size) if args.max_bundle_size \
            else make_plan(ds)
        content = sum(b.nbytes for b in plan.bundles)
        say("bundles: " + ", ".join(f"{b.filename} ({len(b.files)} files, "
                                    f"{b.nbytes / MB:.0f} MB)" for b in plan.bundles))

        load0, version = os.getloadavg()[0], code_version()
        say("anchor: MD5 + CRC32 of the same bytes ...")
        a = anchor(ds, plan, ws)
        say(f"  {a.wall:.1f} s wall, {a.cpu:.1f} s CPU")
        say("floor: MD5 of the ZIP + MD5 of annexed files against their keys + CRC32 ...")
        a.floor = floor(ds, plan, ws)
        say(f"  {a.floor.wall:.1f} s wall, {a.floor.cpu:.1f} s CPU")
        say("ours: datalad rdr-export ...")
        o, sent, ours_server = ours(ds, plan, ws, args.server_profile,
                                    args.max_bundle_size, part_size=args.part_size)
        o.planned = [b.filename for b in plan.bundles]
        o.sent = [b.filename for b in sent]
        o.nfiles = sum(len(b.files) for b in plan.bundles)
        say(f"  {o.wall:.1f} s wall, {o.cpu:.1f} s CPU; sent " + ", ".join(o.sent))
        say("manual: 7zz per bundle, then dvuploader ...")
        m, _, manual_server = manual(ds, sent, ws, args.server_profile, args.dv_jobs,
                                     args.part_size)
        say(f"  {m.wall:.1f} s wall, {m.cpu:.1f} s CPU")

        ok = report("--quick" if args.quick else f"--size-gb {args.size_gb:g}", content,
                    a, o, m, {"ours": ours_server, "manual": manual_server}, ws,
                    args.server_profile, args.dv_jobs, gen_wall, load0, version)
        if args.cprofile:
            say("\nours again, under cProfile ...")
            prof = ws.root / "ours.prof"
            p, _, _ = ours(ds, plan, ws, args.server_profile, args.max_bundle_size,
                           cprofile=(prof, args.cprofile), part_size=args.part_size)
            print_profile(prof, args.cprofile, p)
            if not same_code(code_version(), version):
                print(f"NOTE: datalad_rdr changed since the measured run (now "
                      f"{code_version()}): the profile is of other code")
        return 0 if ok else 1
    finally:
        ws.cleanup(keep=args.keep)
        if args.keep:
            print(f"kept {ws.root} (log: {ws.log}); remove it when done")


if __name__ == "__main__":
    sys.exit(main())
