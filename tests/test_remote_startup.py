"""What the ``rdr`` remote's process loads: nothing of DataLad until a token is needed.

git-annex starts ``git-annex-remote-rdr`` four times for one ``initremote`` and once per job
of a ``get``. Here the real remote runs under real git-annex, behind a wrapper on PATH that
starts it with ``python -X importtime`` and keeps each process's stderr (its import log and
its log lines) in a file of its own; the tests read which modules each process imported.
"""

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import datalad.api as dl
import pytest
from annexremote import Master
from annexremote import SpecialRemote as PlainRemote
from conftest import DV

from datalad_rdr.demo import make_bids_dataset
from datalad_rdr.remote.boundary import RemoteError
from datalad_rdr.remote.special import RdrRemote

BIN = Path(sys.executable).parent
T1W = "sub-01/anat/sub-01_T1w.nii.gz"


class Wrapped:
    """A ``git-annex-remote-rdr`` in front of the real one: each process it starts writes
    its stderr to ``logs/remote-<pid>.log``."""

    def __init__(self, root: Path, *args: str):
        self.bin, self.logs = root / "bin", root / "logs"
        self.bin.mkdir(parents=True)
        self.logs.mkdir()
        script = self.bin / "git-annex-remote-rdr"
        script.write_text(
            "#!/bin/sh\n"
            f"exec '{sys.executable}' -X importtime '{BIN / 'git-annex-remote-rdr'}' "
            f"{' '.join(args)} \"$@\" 2>'{self.logs}'/remote-$$.log\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)

    def env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DATALAD_CREDENTIAL_")}
        env["PATH"] = f"{self.bin}{os.pathsep}{BIN}{os.pathsep}{env['PATH']}"
        env.update(extra)
        return env

    def processes(self) -> list[tuple[set[str], str]]:
        """(modules imported, the rest of stderr) of each remote process started so far."""
        found = []
        for log in sorted(self.logs.glob("remote-*.log")):
            modules, rest = set(), []
            for line in log.read_text().splitlines():
                if line.startswith("import time:"):
                    modules.add(line.rsplit("|", 1)[-1].strip())
                else:
                    rest.append(line)
            assert "datalad_rdr.remote.special" in modules, log.read_text()[-2000:]
            found.append((modules, "\n".join(rest)))
        return found

    def clear(self):
        for log in self.logs.glob("remote-*.log"):
            log.unlink()


def datalad_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m == "datalad" or m.startswith(("datalad.", "datalad_next"))}


def run(cmd, cwd, env, check=True):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture
def wrapped(tmp_path):
    return Wrapped(tmp_path / "wrapper")


def test_initremote_starts_the_remote_without_datalad_or_requests(sandbox, wrapped,
                                                                  tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = wrapped.env()
    run(["git", "init", "-q"], repo, env)
    run(["git", "annex", "init", "-q"], repo, env)
    run(["git", "annex", "initremote", "rdr", "type=external", "externaltype=rdr",
         "encryption=none", f"url={sandbox.dataverse_url}",
         f"pid={DV(sandbox).create_dataset()}"], repo, env)
    assert run(["git", "config", "remote.rdr.annex-externaltype"], repo, env).stdout \
        .strip() == "rdr"
    processes = wrapped.processes()
    assert len(processes) >= 2  # LISTCONFIGS, INITREMOTE, ... (four with git-annex 10)
    for modules, _ in processes:
        assert datalad_modules(modules) == set()
        assert "requests" not in modules  # no request to the server, no HTTP client


@pytest.fixture
def exported(make_sandbox, tmp_path, monkeypatch):
    """A clone of a small dataset exported to the sandbox: published and open when asked
    for, else a restricted draft."""

    def make(public: bool):
        sb = make_sandbox("rdr")
        ds = make_bids_dataset(tmp_path / "ds", subjects=1, nifti_bytes=50_000)
        if public:
            meta = ds / ".datalad/rdr/metadata.yaml"
            meta.write_text(meta.read_text().replace("access: restricted", "access: open")
                            .replace("opt_out_reason: privacy\n", ""))
            dl.save(dataset=str(ds), result_renderer="disabled")
        store = tmp_path / "store"
        monkeypatch.setenv("DATALAD_CREDENTIAL_RDR_SECRET", sb.api_token)
        results = dl.rdr_export(dataset=str(ds), url=sb.dataverse_url,
                                collection=sb.collection, ria_store=f"ria+file://{store}",
                                ria_alias="study", result_renderer="disabled",
                                return_type="list", on_failure="ignore",
                                **({"publish": "major"} if public else {}))
        assert [r for r in results if r["status"] in ("error", "impossible")] == []
        monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET")
        clone = tmp_path / "clone"
        dl.clone(source=f"ria+file://{store}#~study", path=str(clone),
                 result_renderer="disabled")
        return sb, ds, clone

    return make


def test_public_member_is_got_without_datalad_in_the_remote(exported, wrapped):
    sb, ds, clone = exported(public=True)
    run(["datalad", "get", T1W], clone, wrapped.env())
    assert (clone / T1W).read_bytes() == (ds / T1W).read_bytes()
    processes = wrapped.processes()
    assert any("requests" in modules for modules, _ in processes)  # the one that read it
    for modules, _ in processes:
        assert datalad_modules(modules) == set()


def test_restricted_member_with_a_stored_credential_and_the_debug_log(exported, tmp_path):
    """The token path still works: DataLad is loaded then, for its credential manager."""
    sb, ds, clone = exported(public=False)
    wrapped = Wrapped(tmp_path / "wrapper", "-l", "debug")
    home = tmp_path / "home"
    home.mkdir()
    env = wrapped.env(HOME=str(home),
                      PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring")
    r = run(["datalad", "get", T1W], clone, env, check=False)
    assert r.returncode != 0
    assert "no API token is set" in r.stdout + r.stderr
    wrapped.clear()

    # found by its realm, the server's URL, under a name of the user's choosing
    run(["datalad", "credentials", "set", "mine", f"secret={sb.api_token}",
         f"realm={sb.dataverse_url}"], clone, env)
    run(["datalad", "get", T1W], clone, env)
    assert (clone / T1W).read_bytes() == (ds / T1W).read_bytes()
    (modules, log), = [p for p in wrapped.processes() if "requests" in p[0]]
    assert "datalad_next.credman" in modules
    assert f"[DEBUG] API token for {sb.dataverse_url}: credential mine" in log
    assert "with the API token: HTTP 303" in log or "with the API token: HTTP 206" in log
    assert sb.api_token not in log

    # and the environment variable, as before
    run(["datalad", "drop", T1W], clone, env)
    run(["datalad", "credentials", "remove", "mine"], clone, env)
    env["DATALAD_CREDENTIAL_RDR_SECRET"] = sb.api_token
    run(["datalad", "get", T1W], clone, env)
    assert (clone / T1W).read_bytes() == (ds / T1W).read_bytes()


def test_command_line_version_and_a_bad_log_level():
    exe = str(BIN / "git-annex-remote-rdr")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "git-annex-remote-rdr (datalad-rdr)" in r.stdout
    r = subprocess.run([exe, "-l", "loud"], capture_output=True, text=True, input="")
    assert r.returncode == 2
    assert "not a log level: 'loud' (one of critical, error, warning, info, debug" in r.stderr
    assert r.stdout == ""  # nothing on the protocol


# -- one protocol line per message ---------------------------------------------------------
class Failing(PlainRemote):
    """A remote whose every RETRIEVE fails with our RemoteError, raised from a cause."""

    def initremote(self):
        pass

    def prepare(self):
        pass

    def transfer_store(self, key, filename):
        pass

    def checkpresent(self, key):
        return False

    def remove(self, key):
        pass

    def transfer_retrieve(self, key, filename):
        try:
            raise OSError("disk\nfull")
        except OSError as exc:
            raise RemoteError("cannot write\nthe file") from exc


def session(remote_class, requests: str):
    out = io.StringIO()
    master = Master(output=out)
    remote = remote_class(master)
    master.LinkRemote(remote)
    master.Listen(io.StringIO(requests))
    return remote, out


def test_an_error_with_newlines_and_a_cause_is_one_protocol_line():
    _, out = session(Failing, "TRANSFER RETRIEVE SHA256E-s1--ab /tmp/x\n")
    assert out.getvalue().splitlines() == [
        "VERSION 1",
        r"TRANSFER-FAILURE RETRIEVE SHA256E-s1--ab cannot write\nthe file -caused by- "
        r"disk\nfull"]
    # a cause the message already tells is not repeated
    exc = OSError("no space left")
    try:
        raise RemoteError(f"cannot write: {exc}") from exc
    except RemoteError as err:
        assert str(err) == "cannot write: no space left"


def test_messages_of_the_remote_are_one_line_and_info_falls_back_to_debug():
    remote, out = session(RdrRemote, "EXTENSIONS INFO\n")
    remote.message("two\nlines", type="info")
    assert out.getvalue().splitlines()[-1] == r"INFO two\nlines"
    remote, out = session(RdrRemote, "")  # a git-annex without INFO
    remote.message("two\nlines", type="info")
    assert out.getvalue().splitlines()[-1] == r"DEBUG two\nlines"
