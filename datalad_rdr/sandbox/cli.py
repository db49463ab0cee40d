"""``datalad-rdr-sandbox``: start the local RDR stand-in in the foreground.

The first line on stdout is one JSON object that tells clients where to go::

    {"dataverse_url": "http://127.0.0.1:8080", "api_token": "...", "collection": "rdr-sandbox",
     "zenodo_url": "http://127.0.0.1:8081/api", "zenodo_token": "...",
     "s3_url": "http://127.0.0.1:9000", "profile": "rdr", ...}

It stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import threading
from dataclasses import replace

from .dataverse import DataverseSandbox, DataverseSettings
from .invenio import InvenioSandbox, InvenioSettings
from . import s3
from .s3 import S3Gate, S3Settings
from .serve import ServedApp

# What is known of the servers each profile stands for. "rdr" is KU Leuven's RDR as far as
# public sources tell (docs/sandbox.rst lists what is uncertain): Dataverse 6.7.1 on an
# OpenStack Swift S3 API without object tagging. RDR's maximum embargo is not public: 36
# months is an assumption (stock Dataverse leaves embargoes off).
PROFILES = {
    "dataverse": dict(dataverse={}, s3={}),
    "rdr": dict(dataverse={"tagging": False, "citation": "rdr", "license_set": "rdr",
                           "extra_blocks": ("geospatial",), "max_embargo_months": 36},
                s3={"tagging": False, "swift": True, "max_parts": 1000}),
}


class Sandbox:
    """The S3, Dataverse and Zenodo (InvenioRDM) servers, each on a loopback port."""

    def __init__(self, profile: str = "rdr", data_dir: str | None = None,
                 host: str = "127.0.0.1", dataverse_port: int = 0, s3_port: int = 0,
                 zenodo_port: int = 0, zenodo: InvenioSettings | None = None,
                 **dataverse_overrides):
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of "
                             f"{', '.join(PROFILES)}")
        self.profile = profile
        self.data_dir = data_dir
        self._own_dir = None
        if data_dir is None:
            self._own_dir = tempfile.TemporaryDirectory(prefix="rdr-sandbox-")
            self.data_dir = self._own_dir.name
        os.makedirs(os.path.join(self.data_dir, "s3"), exist_ok=True)
        # moto keeps objects larger than its buffer in temporary files: put them here.
        s3.SPOOL_DIR = os.path.join(self.data_dir, "s3")
        conf = PROFILES[profile]
        self.s3_settings = S3Settings(**conf["s3"])
        self.dataverse_settings = DataverseSettings(**{**conf["dataverse"],
                                                       **dataverse_overrides})
        self.gate = S3Gate(self.s3_settings)
        self.s3_server = ServedApp(self.gate, host, s3_port)
        self.s3 = self._client()
        self.dataverse = DataverseSandbox(self.dataverse_settings, self.s3,
                                          self.s3_settings.bucket)
        self.dataverse_server = ServedApp(self.dataverse, host, dataverse_port)
        self.zenodo_settings = zenodo or InvenioSettings()
        self.zenodo = InvenioSandbox(self.zenodo_settings, self.s3, self.s3_settings.bucket)
        self.zenodo_server = ServedApp(self.zenodo, host, zenodo_port)

    def _client(self):
        import boto3
        from botocore.config import Config

        s = self.s3_settings
        return boto3.client(
            "s3", endpoint_url=self.s3_server.url, region_name=s.region,
            aws_access_key_id=s.access_key, aws_secret_access_key=s.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"max_attempts": 2}),
        )

    def start(self) -> "Sandbox":
        self.s3_server.start()
        self.s3.create_bucket(Bucket=self.s3_settings.bucket)
        self.dataverse_server.start()
        self.zenodo_server.start()
        return self

    def stop(self) -> None:
        self.zenodo_server.stop()
        self.dataverse_server.stop()
        self.s3_server.stop()
        if s3.SPOOL_DIR == os.path.join(self.data_dir, "s3"):
            s3.SPOOL_DIR = None
        if self._own_dir is not None:
            self._own_dir.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def dataverse_url(self) -> str:
        return self.dataverse_server.url

    @property
    def api_token(self) -> str:
        return self.dataverse_settings.api_token

    @property
    def collection(self) -> str:
        return self.dataverse_settings.collection

    @property
    def zenodo_url(self) -> str:
        return self.zenodo_server.url + "/api"

    def describe(self) -> dict:
        d = self.dataverse_settings
        return {
            "dataverse_url": self.dataverse_url,
            "api_token": d.api_token,
            "collection": d.collection,
            "admin_token": d.admin_token,
            "other_token": d.other_token,
            "zenodo_url": self.zenodo_url,
            "zenodo_token": self.zenodo_settings.token,
            "s3_url": self.s3_server.url,
            "bucket": self.s3_settings.bucket,
            "profile": self.profile,
            "review": d.review,
            "data_dir": self.data_dir,
        }

    def configure(self, **changes) -> None:
        """Change Dataverse settings of the running sandbox (tests use this)."""
        self.dataverse.settings = replace(self.dataverse.settings, **changes)
        self.dataverse_settings = self.dataverse.settings


def _iso_date(text: str) -> str:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text}") from None
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="datalad-rdr-sandbox",
        description="Run a local Dataverse (RDR) API server with its bytes in moto's S3 "
                    "server, on loopback, until SIGINT/SIGTERM. The first stdout line is "
                    "a JSON object with dataverse_url, api_token and collection.")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="rdr",
                        help="which server to emulate (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0,
                        help="Dataverse API port (default: a free port)")
    parser.add_argument("--s3-port", type=int, default=0,
                        help="S3 API port (default: a free port)")
    parser.add_argument("--zenodo-port", type=int, default=0,
                        help="Zenodo (InvenioRDM) API port (default: a free port)")
    parser.add_argument("--data-dir", help="where stored objects live (default: a "
                                           "temporary directory removed at exit)")
    parser.add_argument("--part-size", type=int, help="multipart part size in bytes "
                        "(default 1 GiB, minimum 5 MiB)")
    parser.add_argument("--url-lifetime", type=int,
                        help="lifetime of presigned URLs in seconds (default 3600)")
    parser.add_argument("--no-download-redirect", action="store_true",
                        help="stream downloads through the API instead of a 303 to S3")
    parser.add_argument("--api-token", help="fix the depositor's API token")
    parser.add_argument("--review", action="store_true",
                        help="a curated installation: the depositor may not publish, "
                             "only submit for review (POST .../submitForReview); the "
                             "admin token publishes")
    parser.add_argument("--today", metavar="YYYY-MM-DD", type=_iso_date,
                        help="the sandbox's date for embargoes (default: the real date; "
                             "PUT /api/admin/sandbox/clock moves it while running)")
    args = parser.parse_args(argv)

    overrides = {}
    if args.part_size:
        overrides["part_size"] = args.part_size
    if args.url_lifetime:
        overrides["url_lifetime"] = args.url_lifetime
    if args.no_download_redirect:
        overrides["download_redirect"] = False
    if args.api_token:
        overrides["api_token"] = args.api_token
    if args.review:
        overrides["review"] = True
    sandbox = Sandbox(args.profile, args.data_dir, dataverse_port=args.port,
                      s3_port=args.s3_port, zenodo_port=args.zenodo_port,
                      **overrides).start()
    if args.today:
        sandbox.dataverse.clock.set(args.today)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps(sandbox.describe()), flush=True)
    try:
        stop.wait()
    finally:
        sandbox.stop()
    print("sandbox stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
