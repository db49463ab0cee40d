"""Injectable faults, shared by the sandbox's servers: tests make the next requests fail."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass


@dataclass
class Fault:
    """Make the next ``count`` requests matching ``method`` and ``path`` (a regex) fail.

    ``status``: answer with this HTTP status, with ``retry_after`` seconds if set.
    ``reset_after``: read that many bytes of the request body, then drop the connection.
    ``delay``: wait that many seconds before answering normally (a slow server).
    ``corrupt``: answer normally, but invert the object's byte at this offset if it is
    served (bit rot on the server, a broken proxy); only object GETs from S3 honour it.
    ``optimistic_lock``: Dataverse only: the request meets a concurrent update of its
    dataset and fails as an OptimisticLockException (500, nothing saved).
    """

    method: str
    path: str
    count: int = 1
    status: int | None = None
    retry_after: int | None = None
    reset_after: int | None = None
    delay: float | None = None
    corrupt: int | None = None
    optimistic_lock: bool = False
    hits: int = 0


class Faults:
    def __init__(self):
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def inject(self, fault: Fault | None = None, **kw) -> Fault:
        fault = fault or Fault(**kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.count > 0 and fault.method == method and re.search(fault.path, path):
                    fault.count -= 1
                    fault.hits += 1
                    return fault
        return None
