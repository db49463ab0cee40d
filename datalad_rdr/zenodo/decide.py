"""Compare what Zenodo holds with what the dataset wants, and decide what to send.

Nothing here talks to Zenodo or touches a file: the inputs are the members, the body the
config makes and the :class:`~datalad_rdr.zenodo.client.Record` read; the outputs are lists
of what differs, so a dry run and a real run decide alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .client import FileEntry, Record
from .config import CUSTOM_FIELDS, MANAGED_METADATA
from .members import ZenodoFile


def _covers(have, want) -> bool:
    """``have`` (Zenodo's) says at least what ``want`` says: Zenodo adds titles and names
    to vocabulary entries and people, which are not differences."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _covers(have[k], v)
                                              for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and \
            all(_covers(h, w) for h, w in zip(have, want))
    return have == want


def metadata_changes(want: dict, record: Record | None) -> list[str]:
    """The fields in which the draft or record differs from the body ``want``."""
    have = record.content if record is not None else {}
    changed = []
    for section, managed in (("metadata", MANAGED_METADATA),
                             ("custom_fields", set(CUSTOM_FIELDS.values()))):
        w, h = want.get(section) or {}, have.get(section) or {}
        # an empty value online is no value (StepUp 3.1 sends empty lists and nulls)
        h = {k: v for k, v in h.items() if k in w or v not in (None, "", [], {})}
        for key in sorted(set(w) | (set(h) & managed)):
            if key not in w or key not in h or not _covers(h[key], w[key]):
                changed.append(f"{section}.{key}")
    if not _covers(have.get("access") or {}, want.get("access") or {}):
        changed.append("access")
    wf, hf = want.get("files") or {}, have.get("files") or {}
    for key in ("order", "default_preview"):
        if key in wf and wf[key] != (hf.get(key) or ([] if key == "order" else None)):
            changed.append(f"files.{key}")
    return changed


_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def compare_versions(local: str, online: str | None) -> int | None:
    """-1, 0 or 1 as semver orders them; None when either is not a semantic version."""
    if local == online:
        return 0
    a, b = _SEMVER.match(local or ""), _SEMVER.match(online or "")
    if not (a and b):
        return None

    def order(m):
        pre = m.group(4)
        # a release sorts after its pre-releases; numeric identifiers sort before others
        ids = tuple((0, int(x), "") if x.isdigit() else (1, 0, x)
                    for x in pre.split(".")) if pre else ()
        return tuple(int(m.group(i)) for i in (1, 2, 3)), (not pre, ids)

    ka, kb = order(a), order(b)
    return (ka > kb) - (ka < kb)


@dataclass
class FilePlan:
    """What to do with a draft's files so that they become ``members``."""

    delete: list[str] = field(default_factory=list)  # online, no longer listed
    replace: list[ZenodoFile] = field(default_factory=list)  # online with another MD5
    add: list[ZenodoFile] = field(default_factory=list)  # not online yet
    complete: list[ZenodoFile] = field(default_factory=list)  # announced, never committed
    same: list[ZenodoFile] = field(default_factory=list)

    @property
    def send(self) -> list[ZenodoFile]:
        return self.replace + self.add + self.complete

    @property
    def changes(self) -> bool:
        return bool(self.delete or self.send)


def plan_files(members: list[ZenodoFile], online: dict[str, FileEntry]) -> FilePlan:
    plan = FilePlan()
    wanted = {m.key for m in members}
    plan.delete = [k for k in online if k not in wanted]
    for m in members:
        entry = online.get(m.key)
        if entry is None:
            plan.add.append(m)
        elif entry.md5 is None:
            plan.complete.append(m)
        elif entry.md5 != m.md5:
            plan.replace.append(m)
        else:
            plan.same.append(m)
    return plan


def needs_content(members: list[ZenodoFile], online: dict[str, FileEntry]
                  ) -> list[ZenodoFile]:
    """Members whose bytes must be here: MD5 unknown, or to be sent."""
    return [m for m in members
            if m.md5 is None or
            (online.get(m.key) or FileEntry(m.key, None, None)).md5 != m.md5]
