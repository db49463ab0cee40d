"""What a bundle member may be called: the names a ZIP holds right and every unzipper
extracts as the same path, checked before anything is laid out.

:func:`check_arcname` refuses what no ZIP can hold (the writer calls it); pre-flight
reports the rest with :func:`name_problems` and :func:`name_clashes`, and shows names
with :func:`shown`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .zipformat import SATURATED_16

#: Names a ZIP cannot hold right: a control character (newline, tab, ESC) breaks
#: listings and scripts, and extractors refuse or replace it; a backslash is a folder
#: separator to Windows tools, so the member comes out as another path; bytes that are
#: not UTF-8 cannot be flagged as UTF-8 and read as other names in every locale.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NOT_UTF8 = re.compile(r"[\ud800-\udfff]")  # undecodable bytes, by surrogateescape
#: Names Windows cannot create, so Explorer's "Extract all" fails on them and 7-Zip
#: renames them: these characters, device names (``CON``, ``aux.txt``: the device is
#: opened instead), and a trailing dot or space (dropped, so ``a.`` overwrites ``a``).
_RESERVED = re.compile(r'[<>:"|?*]')
_DEVICE = re.compile(r"(?i)(CON|PRN|AUX|NUL|COM[1-9\u00b9\u00b2\u00b3]|"
                     r"LPT[1-9\u00b9\u00b2\u00b3])(\..*)?")
#: One character class for the characters above, so that a good name (nearly all) costs
#: one scan of it and a few substring searches (:func:`_suspect`).
_SUSPECT_CHARS = re.compile(r'[\x00-\x1f\x7f-\x9f\\\ud800-\udfff<>:"|?*]')
_DEVICE_STARTS = ("/con", "/prn", "/aux", "/nul", "/com", "/lpt")


def _suspect(name: str) -> bool:
    """Whether ``name`` may break a rule of :func:`name_problems` (a superset: that
    function looks closer). 2.8 us a name here, where one regex of all the rules took 4.8."""
    if _SUSPECT_CHARS.search(name) or name.endswith((".", " ")) or "./" in name \
            or " /" in name:
        return True
    lowered = "/" + name.lower()
    return any(start in lowered for start in _DEVICE_STARTS)


def name_problems(name: str) -> list[tuple[str, str]]:
    """``(code, detail)`` for each naming rule that ``name`` breaks; the codes are
    pre-flight's: ``NAME_CONTROL_CHARACTER``, ``NAME_BACKSLASH``, ``NAME_NOT_UTF8`` (no
    ZIP holds the name right) and ``NAME_NOT_PORTABLE`` (Windows cannot extract it)."""
    if not _suspect(name):
        return []
    problems = []
    if _CONTROL.search(name):
        problems.append(("NAME_CONTROL_CHARACTER", " ".join(
            sorted({repr(c)[1:-1] for c in _CONTROL.findall(name)}))))
    if "\\" in name:
        problems.append(("NAME_BACKSLASH", "\\"))
    if _NOT_UTF8.search(name):
        problems.append(("NAME_NOT_UTF8", " ".join(
            sorted({shown(c) for c in _NOT_UTF8.findall(name)}))))
    windows = [repr(c) for c in sorted(set(_RESERVED.findall(name)))]
    parts = name.split("/")
    windows += [f"device name {p}" for p in parts if _DEVICE.fullmatch(p)]
    if any(p.endswith((".", " ")) for p in parts if p not in (".", "..")):
        windows.append("trailing dot or space")
    if windows:
        problems.append(("NAME_NOT_PORTABLE", " ".join(windows)))
    return problems


def name_clashes(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(name, other)`` for each name that is ``other`` to Windows and macOS, which compare
    names regardless of case (macOS also of Unicode normalization): of the two, extracting
    keeps one. Part of ``NAME_NOT_PORTABLE``."""
    seen: dict[str, str] = {}
    clashes = []
    for name in sorted(names):
        key = unicodedata.normalize("NFC", name).casefold()
        if key in seen:
            clashes.append((name, seen[key]))
        else:
            seen[key] = name
    return clashes


def shown(name: str) -> str:
    """``name`` on one line: control characters and undecodable bytes as escapes."""
    if not (_CONTROL.search(name) or _NOT_UTF8.search(name)):
        return name
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF
                   else repr(c)[1:-1] if _CONTROL.match(c) else c for c in name)


def check_arcname(name: str) -> None:
    """Raise ValueError unless ``name`` is a relative POSIX path a ZIP can hold right."""
    def bad(why: str):
        return ValueError(f"invalid bundle member name {name!r}: {why}")

    if not isinstance(name, str) or not name:
        raise bad("must be a non-empty string")
    if name.startswith("/"):
        raise bad("absolute path")
    if "\\" in name:
        raise bad("backslash (use '/' to separate directories)")
    if "\0" in name:
        raise bad("NUL character")
    if _CONTROL.search(name):
        raise bad("control character (newline, tab, ...)")
    parts = name.split("/")
    if ".." in parts:
        raise bad("'..' component")
    if "." in parts:
        raise bad("'.' component")
    if "" in parts:
        raise bad("empty component ('//' or trailing '/')")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("not encodable as UTF-8") from None
    if len(encoded) > SATURATED_16:
        raise bad("longer than 65535 bytes in UTF-8")

