"""Retries with backoff that honour Retry-After: one policy for every server we talk to."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import requests

log = logging.getLogger("datalad.rdr.http")

RETRY_STATUS = {429, 500, 502, 503, 504}


def presigned_lifetime(url: str) -> tuple[dt.datetime | None, int | None]:
    """When a presigned S3 URL was signed and for how many seconds it is valid
    (``X-Amz-Date``, ``X-Amz-Expires``); None for what the URL does not say."""
    query = parse_qs(urlsplit(url).query)
    try:
        lifetime = int(query["X-Amz-Expires"][0])
    except (KeyError, ValueError):
        lifetime = None
    try:
        signed = dt.datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.UTC)
    except (KeyError, ValueError):
        signed = None
    return signed, lifetime


@dataclass
class Backoff:
    attempts: int = 6
    first: float = 0.5
    factor: float = 2.0
    cap: float = 30.0

    def delays(self):
        delay = self.first
        for _ in range(self.attempts - 1):
            yield min(self.cap, delay) * (0.75 + random.random() / 2)
            delay *= self.factor


def retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def transient(exc: BaseException | None = None, response=None) -> bool:
    """Worth another try: a dropped connection, a time-out, or a 429/5xx answer."""
    if response is not None:
        return response.status_code in RETRY_STATUS
    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def with_retries(send, *, what: str, backoff: Backoff | None = None):
    """Call ``send()`` (which returns a Response) until it is not transient.

    Returns the last response; re-raises the last connection error when tries run out.
    """
    backoff = backoff or Backoff()
    delays = backoff.delays()
    while True:
        try:
            response = send()
            if not transient(response=response):
                return response
            error = f"HTTP {response.status_code}"
        except (requests.ConnectionError, requests.Timeout) as exc:
            response, error = None, type(exc).__name__
            last_exc = exc
        try:
            delay = next(delays)
        except StopIteration:
            if response is not None:
                return response
            raise last_exc
        delay = max(delay, retry_after(response) or 0)
        log.info("%s: %s, retrying in %.1f s", what, error, delay)
        time.sleep(delay)
