"""``datalad rdr-export``: publish a dataset's files on RDR as ZIP bundles."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from datalad.distribution.dataset import require_dataset, resolve_path
from datalad.interface.base import eval_results
from datalad.support.exceptions import CapturedException
from datalad.support.param import Parameter
from datalad_next.commands import (
    EnsureCommandParameterization,
    ParameterConstraintContext,
    ValidatedInterface,
    build_doc,
    get_status_dict,
)
from datalad_next.constraints import (
    Constraint,
    ConstraintError,
    EnsureBool,
    EnsureChoice,
    EnsureDataset,
    EnsureInt,
    EnsureListOf,
    EnsureRange,
    EnsureStr,
)
from datalad_next.datasets import datasetmethod

from ..cluster import SlurmError, SlurmOptions, parse_sbatch, run_slurm_export
from ..credentials import CredentialError, obtain, obtain_token
from ..export import ExportOptions, run_export, run_verify
from ..upload import DEFAULT_JOBS
from ..metadata import run_template
from ..openminds_export import run_openminds
from .constraints import EnsureParsedSize


class EnsureServerURL(Constraint):
    """A Dataverse installation's base URL: with http(s)://, without /api."""

    def __call__(self, value):
        text = str(value).strip()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            self.raise_for(value, _braces(
                f"{text!r} is not a server URL: write it with its scheme, e.g. "
                f"https://{text.split('://')[-1]}"))
        path = parts.path.rstrip("/")
        if path == "/api" or path.endswith("/api") or "/api/" in path:
            base = urlunsplit((parts.scheme, parts.netloc, path.split("/api")[0], "", ""))
            self.raise_for(value, _braces(
                f"{text} points into the API: give the installation's base URL, {base}"))
        return text.rstrip("/")

    def short_description(self):
        return "http(s) URL of the Dataverse installation"


class EnsureSbatchOptions(Constraint):
    """``--sbatch`` values: sbatch arguments, as on an sbatch command line."""

    def __call__(self, value):
        try:
            return parse_sbatch(value)
        except SlurmError as exc:
            self.raise_for(value, _braces(str(exc)))

    def short_description(self):
        return "sbatch options, e.g. '-p batch -A lp_myproject -t 2:00:00'"


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# Options that cannot go together, each with why: refused before anything runs.
CONFLICTS = [
    ("publish", "dry_run", "a dry run touches no server"),
    ("publish", "verify_only", "--verify-only sends nothing; export with --publish"),
    ("dry_run", "verify_only", "--verify-only already sends nothing"),
    ("metadata_template", "dry_run", "--metadata-template only writes the template"),
    ("metadata_template", "verify_only", "--metadata-template only writes the template"),
    ("metadata_template", "publish", "--metadata-template only writes the template"),
    ("metadata_template", "openminds", "each writes one file and stops; run them in turn"),
    ("openminds", "publish", "--openminds only writes the file; publish first, then run it "
                             "for the DOI"),
    ("openminds", "dry_run", "--openminds touches no server anyway"),
    ("openminds", "verify_only", "each does one thing and stops; run them in turn"),
    ("recursive", "no_recursive", "choose one"),
    ("check_server", "dry_run", "--check-server only asks the server; run them in turn"),
    ("check_server", "verify_only", "each does one thing and stops; run them in turn"),
    ("check_server", "publish", "--check-server changes nothing; export with --publish"),
    ("check_server", "metadata_template", "each does one thing and stops; run them in turn"),
    ("slurm", "dry_run", "a dry run submits nothing; run --dry-run alone"),
    ("slurm", "verify_only", "--verify-only sends nothing; run it alone"),
    ("slurm", "check_server", "each does one thing and stops; run them in turn"),
    ("slurm", "metadata_template", "--metadata-template only writes the template"),
    ("slurm", "openminds", "--openminds only writes the file"),
]
# Options that only mean something with another one.
NEEDS = [("sbatch", "slurm"), ("no_wait", "slurm")]


def _option(name: str) -> str:
    return "-r" if name == "recursive" else "--" + name.replace("_", "-")


class RdrExportParams(EnsureCommandParameterization):
    def __init__(self, param_constraints):
        super().__init__(param_constraints, joint_constraints={
            ParameterConstraintContext((a, b), "conflict"): self._conflict(a, b, why)
            for a, b, why in CONFLICTS} | {
            ParameterConstraintContext((a, b), "needs"): self._needs(a, b)
            for a, b in NEEDS})

    def _conflict(self, a: str, b: str, why: str):
        def check(**given):
            if given[a] and given[b]:
                self.raise_for(given, f"{_option(a)} and {_option(b)} cannot be used "
                                      f"together: {why}")
        return check

    def _needs(self, a: str, b: str):
        def check(**given):
            if given[a] not in (None, False) and not given[b]:  # --sbatch "" counts
                self.raise_for(given, f"{_option(a)} only goes with {_option(b)}: add "
                                      f"{_option(b)}, or leave {_option(a)} out")
        return check


@build_doc
class RdrExport(ValidatedInterface):
    """Publish a dataset on RDR (Dataverse) as size-capped ZIP bundles, with provenance

    The files of a commit (default HEAD) are planned into bundles, the way KU Leuven's RDR
    guide asks: for a BIDS dataset ``core`` (top-level files, sidecars, stimuli, ...),
    ``raw`` (``sub-*/``), one bundle per large derivative pipeline, and ``derivatives``;
    for other datasets one bundle per top-level folder. Rules in ``.datalad/rdr/bundles``
    (``glob bundle`` lines, versioned in the dataset) override the defaults. No ZIP is
    larger than the cap: a bundle over it is split into numbered parts at subject boundaries,
    and a bundle with a file over the cap is written as 7-Zip split volumes of the cap
    (``raw.zip.001``, ``raw.zip.002``, ...; ``7z x raw.zip.001`` restores it).

    Each bundle is streamed as a deterministic ZIP (sorted members, timestamps from the
    commit; already-compressed files stored, text deflated) straight into the server's S3
    store through presigned URLs (Dataverse direct upload) -- no temporary ZIP on disk, and
    never through the ordinary upload path, which would unpack it. Annexed content that is
    not present is fetched per bundle and checked against its key while it is read.
    Bundles are registered in the draft, restricted unless the dataset is declared open
    (``access: open`` in ``.datalad/rdr/metadata.yaml``; ``--no-restrict`` is refused when
    that file says ``access: restricted``). With ``access: embargoed`` (``embargo_until``,
    ``embargo_reason``, ``after_embargo``) the record and its DOI are public at once and the
    bundles are embargoed until the date through the server's embargo API (README and
    documentation stay public); the server opens them on the date, public or restricted as
    ``after_embargo`` says. An embargo beyond the server's maximum is refused before any
    upload; a later export keeps, changes or lifts it as the file says, sending no byte.

    The record's metadata -- title, authors, contact, description, subject, keywords,
    license, access and opt-out reason, related paper and code -- comes from
    ``.datalad/rdr/metadata.yaml`` in the dataset (``--metadata-template`` writes a commented
    one to fill in). It is checked against the server's own required fields, vocabularies and
    licenses before anything is sent; the draft is created from it, updated when the file
    changed, and its license set. RDR's technical format is derived from the file
    extensions. ``--openminds PATH`` writes the same metadata as openMINDS JSON-LD for
    EBRAINS.

    Before anything is sent, a pre-flight checks the commit as the RDR guide asks: a README
    that is not empty; for BIDS datasets the guide's common errors under the validator's
    names (JSON_INVALID, SIDECAR_KEY_REQUIRED for a bold file without a TaskName,
    PARTICIPANT_ID_MISMATCH, JSON_KEY_REQUIRED for dataset_description.json), and, when
    ``bids-validator-deno`` is installed, its errors too. Errors stop the export;
    ``--ignore-preflight CODE`` goes on despite one (recorded in the manifest). A dataset over
    50 GB is reminded of RDR's large-dataset procedure.

    The README (and documentation files listed in the metadata file) are also sent as
    separate public files, so that the landing page shows them without an access request.
    The dataset's git history (no file content) goes into the record too, as
    ``dataset-history.git.bundle``, public unless the metadata file says ``history:
    restricted``: ``datalad rdr-clone DOI`` clones the dataset from it.
    After the upload the server's listing is verified against the manifest -- every file
    there, sizes and MD5s equal, README public, bundles restricted and under the file's
    embargo, nothing else -- and shown as a table; any mismatch is an error.
    ``--verify-only`` does only that.
    ``--publish major|minor`` then publishes the draft, waits until the server has finished,
    and writes the DOI into the manifest and ``CITATION.cff``, saved in the dataset.

    The manifest ``.datalad/rdr/manifest.json`` -- which commit, file and annex key went into
    which bundle, at which byte offset -- is saved in the dataset. A rerun sends only
    bundles whose content changed; after a crash or kill it continues where it stopped, in the
    same draft. What shapes what lands on the server -- server, dataset, collection, cap, -r,
    pre-flight overrides, restriction -- is recorded with the export, and a plain
    ``datalad rdr-export`` uses it again; a value given that differs is said in the results,
    with the bundles it sends again or removes. One export of a dataset runs at a time.

    The dataset then gets the git-annex special remote ``rdr`` for this server and dataset
    (``autoenable=true``), and every exported annexed file is recorded in the git-annex
    branch as present in it, with its bundle and byte offset: in any clone, ``datalad get``
    reads just that file's bytes out of its bundle by an HTTP Range request. With
    ``--ria-store`` the dataset (history, manifest, git-annex branch; no annexed content) is
    pushed to a RIA store, so that ``datalad clone 'ria+file:///store#~ALIAS'`` works.

    ``--slurm`` sends the bundles from a SLURM cluster: the export is planned and the draft
    opened here, then one array job is submitted with a task per bundle still to send (each
    uploads its bundle, the same bytes as a local export) and one final job, after all of
    them, that registers the uploads, writes the manifest, verifies and, with ``--publish``,
    publishes. It waits and shows the tasks' progress unless ``--no-wait``; ``--sbatch``
    passes sbatch options (partition, account, cluster, time). A failed task is reported with
    its log; a rerun submits only what is missing, and a plain rerun registers what the
    tasks uploaded without sending it again (docs: "Large datasets").

    The API token comes from DataLad's credential system: the credential named with
    ``--credential``, else ``DATALAD_CREDENTIAL_RDR_SECRET`` when it is set, else the
    last one used for the server, else the stored credential ``rdr``.
    """

    _validator_ = RdrExportParams(dict(
        dataset=EnsureDataset(installed=True),
        url=EnsureServerURL(),
        collection=EnsureStr(min_len=1),
        pid=EnsureStr(min_len=1),
        commit=EnsureStr(min_len=1),
        max_bundle_size=EnsureParsedSize(min=1024),
        jobs=EnsureInt() & EnsureRange(min=1, max=32),
        recursive=EnsureBool(),
        no_recursive=EnsureBool(),
        dry_run=EnsureBool(),
        drop_after=EnsureBool(),
        no_restrict=EnsureBool(),
        credential=EnsureStr(min_len=1),
        ria_store=EnsureStr(match=r"^ria\+(file|ssh|https?)://"),
        ria_alias=EnsureStr(match=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
        ignore_preflight=EnsureStr(min_len=1) | EnsureListOf(EnsureStr(min_len=1)),
        verify_only=EnsureBool(),
        publish=EnsureChoice("major", "minor"),
        metadata_template=EnsureBool(),
        openminds=EnsureStr(min_len=1),
        check_server=EnsureBool(),
        slurm=EnsureBool(),
        sbatch=EnsureSbatchOptions(),
        no_wait=EnsureBool(),
    ))

    _params_ = dict(
        dataset=Parameter(args=("-d", "--dataset"),
                          doc="the dataset to export (default: the current one)"),
        url=Parameter(args=("--url",), metavar="URL",
                      doc="""base URL of the Dataverse installation, e.g.
                      https://rdr.kuleuven.be (default: the server of the last export)"""),
        collection=Parameter(args=("--collection",), metavar="ALIAS",
                             doc="""collection in which to create the dataset's draft when
                             no PID is known"""),
        pid=Parameter(args=("--pid",), metavar="PID",
                      doc="""persistent id of an existing dataset, e.g.
                      doi:10.48804/ABCDEF (default: the one of the last export)"""),
        commit=Parameter(args=("--commit",), metavar="COMMIT",
                         doc="the commit to export (default: HEAD)"),
        max_bundle_size=Parameter(args=("--max-bundle-size",), metavar="SIZE",
                                  doc="""cap on the size of every ZIP, e.g. 20GB, 500MiB or
                                  1000000 (default: the last export's, else 20GB). A new
                                  cap re-bundles: the export says which bundles it sends
                                  again and removes"""),
        jobs=Parameter(args=("-J", "--jobs"), metavar="N",
                       doc="""bundles streamed and uploaded at once, and uploads (PUTs)
                       in flight in total, over all bundles and their parts (default: 4).
                       Each ZIP is still read, checked and hashed once, in order; bundles
                       are registered one at a time, as they finish. More than 1 pays off
                       where one connection does not fill the link"""),
        recursive=Parameter(args=("-r", "--recursive"), action="store_true",
                            doc="""include the content of subdatasets at their paths
                            (remembered: a later plain rerun includes them too)"""),
        no_recursive=Parameter(args=("--no-recursive",), action="store_true",
                               doc="""leave the subdatasets out after an export with -r:
                               their bundles are removed from the draft"""),
        dry_run=Parameter(args=("--dry-run",), action="store_true",
                          doc="""print the plan -- per bundle 'unchanged', 'would send'
                          or 'would replace' against the last export -- and every problem
                          that would stop the export (metadata file, unsaved changes,
                          content available nowhere, pre-flight); touch no server"""),
        drop_after=Parameter(args=("--drop-after",), action="store_true",
                             doc="""drop annexed content that was fetched for a bundle once
                             that bundle is confirmed (for datasets larger than the disk)"""),
        no_restrict=Parameter(args=("--no-restrict",), action="store_true",
                              doc="""register bundles as public files; only with
                              'access: open' in the metadata file, which is where an open
                              dataset is declared"""),
        ignore_preflight=Parameter(
            args=("--ignore-preflight",), metavar="CODE", action="append",
            doc="""go on despite this pre-flight error (e.g. JSON_INVALID; 'all' for every
            one); the override is recorded in the manifest. Repeat for several codes"""),
        verify_only=Parameter(args=("--verify-only",), action="store_true",
                              doc="""only compare the server's files with the manifest of
                              the last export and print the table; send nothing"""),
        publish=Parameter(args=("--publish",), metavar="major|minor",
                          doc="""after a clean verify, publish the draft as a new major
                          or minor version, wait for the server, and save the DOI in the
                          manifest and CITATION.cff (the first publication is major).
                          Without it the draft is left for review in the web UI"""),
        ria_store=Parameter(args=("--ria-store",), metavar="URL",
                            doc="""after the export, push the dataset (history, manifest,
                            git-annex branch with every file's location in RDR; no annexed
                            content) to this RIA store, e.g. ria+file:///data/store, so
                            that 'datalad clone URL#~ALIAS' then 'datalad get' reads files
                            out of their bundles through the 'rdr' special remote"""),
        ria_alias=Parameter(args=("--ria-alias",), metavar="ALIAS",
                            doc="""the dataset's alias in the RIA store (default: the
                            dataset's directory name)"""),
        credential=Parameter(args=("--credential",), metavar="NAME",
                             doc="name of the DataLad credential holding the API token"),
        metadata_template=Parameter(
            args=("--metadata-template",), action="store_true",
            doc="""write a commented template of the metadata file
            .datalad/rdr/metadata.yaml (title, authors, contact, subject, keywords, license,
            access, ...; what the dataset already says is filled in) and stop; fill it in,
            'datalad save', then export. An existing file is never overwritten"""),
        openminds=Parameter(
            args=("--openminds",), metavar="PATH",
            doc="""write openMINDS (v3, as EBRAINS curation takes it) JSON-LD of the dataset
            to PATH from the same metadata file -- Dataset, DatasetVersion, persons,
            license, DOI (from the manifest, so after --publish) -- validated by the
            'openminds' package, and stop; touches no server"""),
    )

    _params_["check_server"] = Parameter(
        args=("--check-server",), action="store_true",
        doc="""ask the server (--url; --collection, and --pid or the dataset of the last
        export) what it allows and print one table: Dataverse version, direct upload,
        object tagging, part size and URL lifetime, the largest file it accepts, whether
        downloads are redirected or streamed, whether this account may publish or must
        submit for review, required fields and vocabularies, licenses, the file-count
        limit, the maximum embargo. Nothing that stays on the server is changed. The
        facts are kept in .git/datalad-rdr/server-HOST.json; later exports cap bundles at
        the largest accepted file""")

    _params_["slurm"] = Parameter(
        args=("--slurm",), action="store_true",
        doc="""send the bundles from a SLURM cluster: plan and open the draft here, then
        submit one array job with a task per bundle still to send (each fetches its
        content, streams and uploads its bundle -- the same bytes as a local export -- and
        drops what it fetched with --drop-after) and one final job, run after the tasks
        whatever their outcome, that registers the uploaded bundles one by one, writes the
        manifest, verifies and, with --publish, publishes. Waits for the jobs and shows
        their progress (see --no-wait); a failed task is reported with its log, and a
        rerun submits only what is missing. Needs sbatch here and the dataset on a file
        system the nodes share; state and logs in .git/datalad-rdr/slurm/""")
    _params_["sbatch"] = Parameter(
        args=("--sbatch",), metavar="OPTIONS", action="append",
        doc="""sbatch options for the jobs, as on an sbatch command line, e.g. --sbatch
        "-p batch -A lp_myproject -M wice -t 2:00:00" (repeat to add more). They are
        checked with 'sbatch --test-only' before anything is sent. A rerun without
        --sbatch uses those of the last submission (--sbatch "" for none). --array,
        --dependency, --output and --error are set by the export""")
    _params_["no_wait"] = Parameter(
        args=("--no-wait",), action="store_true",
        doc="""with --slurm: return the job ids once submitted; the final job finishes the
        export, and a later plain 'datalad rdr-export' shows the result (or finishes it:
        bundles the tasks uploaded are registered, not sent again)""")

    _examples_ = [
        {"text": "Show how a dataset would be bundled",
         "code_cmd": "datalad rdr-export --dry-run"},
        {"text": "Export to a new draft in a collection",
         "code_cmd": "datalad rdr-export --url https://rdr.kuleuven.be "
                     "--collection mylab"},
        {"text": "Send what changed since the last export (same server and dataset)",
         "code_cmd": "datalad rdr-export"},
        {"text": "Start the metadata file from a commented template",
         "code_cmd": "datalad rdr-export --metadata-template"},
        {"text": "Describe the published dataset in openMINDS for EBRAINS",
         "code_cmd": "datalad rdr-export --openminds openminds.jsonld"},
        {"text": "Find out what the server allows before the first export",
         "code_cmd": "datalad rdr-export --check-server --url https://rdr.kuleuven.be "
                     "--collection mylab"},
        {"text": "Check what the server holds against the manifest",
         "code_cmd": "datalad rdr-export --verify-only"},
        {"text": "Send the bundles as SLURM jobs on the cluster's batch partition",
         "code_cmd": "datalad rdr-export --slurm --sbatch '-p batch -A lp_myproject -t 4:00:00'"},
        {"text": "Export, verify and publish version 1.0, keeping the DOI in the dataset",
         "code_cmd": "datalad rdr-export --publish major"},
    ]

    @staticmethod
    @datasetmethod(name="rdr_export")
    @eval_results
    def __call__(dataset=None, *, url=None, collection=None, pid=None, commit="HEAD",
                 max_bundle_size=None, jobs=DEFAULT_JOBS, recursive=False, no_recursive=False,
                 dry_run=False, drop_after=False, no_restrict=False, credential=None,
                 ignore_preflight=None, verify_only=False, publish=None,
                 ria_store=None, ria_alias=None, metadata_template=False, openminds=None,
                 check_server=False, slurm=False, sbatch=None, no_wait=False):
        # from a subdirectory too, like 'datalad save'
        ds = dataset.ds if dataset else require_dataset(None, check_installed=True,
                                                        purpose="export to RDR")
        path = Path(ds.path)
        if metadata_template:
            for res in run_template(path):
                yield get_status_dict(**res)
            return
        if openminds:
            for res in run_openminds(path, resolve_path(openminds, ds if dataset else None), commit,
                                     recursive):
                yield get_status_dict(**res)
            return
        if check_server:
            yield from _check_server(ds, url, collection, pid, credential)
            return
        used = []  # the credential whose token was sent, once asked for

        def token_for(server):
            used.append(obtain(ds.config, server, credential))
            return used[-1].secret

        opts = ExportOptions(
            url=url, token_for=token_for,
            collection=collection, pid=pid, commit=commit, cap=max_bundle_size, jobs=jobs,
            # not given: the last export's (None)
            recursive=True if recursive else False if no_recursive else None,
            dry_run=dry_run, drop_after=drop_after,
            restrict=False if no_restrict else None,
            ignore_preflight=None if ignore_preflight is None else
            [ignore_preflight] if isinstance(ignore_preflight, str) else list(ignore_preflight),
            publish=publish, ria_store=ria_store, ria_alias=ria_alias,
            wait=ds.config.obtain("datalad.rdr.export-wait", default=60, valtype=float))
        accepted = False
        with _interrupts() as interrupted:
            try:
                if slurm:
                    runs = run_slurm_export(path, opts, SlurmOptions(
                        sbatch, wait=not no_wait, credential=credential))
                else:
                    runs = (run_verify if verify_only else run_export)(path, opts)
                for res in runs:
                    interrupted()
                    # an ok result after the token was sent: the server took it
                    accepted = accepted or bool(used) and res["status"] == "ok"
                    yield get_status_dict(**res)
                interrupted()
                if accepted:
                    used[-1].mark_used()
            except subprocess.CalledProcessError as exc:
                # a git or git-annex child ends like this when Ctrl-C reaches it first
                yield get_status_dict(
                    action="rdr-export", path=str(path), status="error",
                    exception=CapturedException(exc),
                    message=f"{' '.join(map(str, exc.cmd[:1] + exc.cmd[3:5]))} stopped (exit "
                            f"{exc.returncode}; interrupted?): rerun 'datalad rdr-export' to "
                            f"continue where it stopped")
            except (KeyboardInterrupt, Exception) as exc:
                # after Ctrl-C, whatever a child killed by it made fail (git-annex's
                # initremote beside the export, say: its CommandError) is the interruption
                if not (isinstance(exc, KeyboardInterrupt) or interrupted.pressed()):
                    raise
                yield get_status_dict(
                    action="rdr-export", path=str(path), status="error",
                    exception=CapturedException(exc),
                    message="interrupted: what was confirmed is kept; rerun 'datalad "
                            "rdr-export' to continue where it stopped")

    @staticmethod
    def custom_result_summary_renderer(results):
        from datalad.ui import ui

        tables = [r["table"] for r in results if r.get("table")]
        if tables:
            ui.message(tables[-1])


@contextlib.contextmanager
def _interrupts():
    """A check that raises KeyboardInterrupt once Ctrl-C was pressed, also when the
    KeyboardInterrupt it raised was swallowed where Python ignores exceptions (a
    ``__del__``, a callback of garbage collection): the export then stops at its next
    result instead of going on; its ``pressed()`` tells whether Ctrl-C was pressed. Only
    where SIGINT has Python's own handler (the main thread of ``datalad``)."""
    seen = []
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        def never() -> None:
            pass

        never.pressed = lambda: False
        yield never
        return

    def on_sigint(signum, frame):
        seen.append(signum)
        signal.default_int_handler(signum, frame)

    def check():
        if seen:
            raise KeyboardInterrupt

    check.pressed = lambda: bool(seen)
    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_server(ds, url, collection, pid, credential):
    from ..dataverse import Dataverse
    from ..discovery import run_check
    from ..gitannex import git_dir
    from ..manifest import load as load_manifest

    path = Path(ds.path)
    previous = load_manifest(path)
    url = url or (previous.server if previous else None)
    if not url:
        yield get_status_dict(action="rdr-check-server", path=str(path), status="error",
                              message="no server given: use --url")
        return
    try:
        _, token = obtain_token(ds.config, url, credential)
    except CredentialError as exc:
        yield get_status_dict(action="rdr-check-server", path=str(path), status="error",
                              message=str(exc))
        return
    if not pid and previous and previous.server == url:
        pid = previous.pid
    for res in run_check(git_dir(path), path, Dataverse(url, token), pid, collection):
        yield get_status_dict(**res)
