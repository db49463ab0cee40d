"""Outside tools the tests use to read our ZIPs back, found the same way by every test.

7-Zip: a system ``7zz``/``7z`` if there is one, else the real 7-Zip binary (p7zip 16.02)
that the test extra ``extractcode-7z`` ships in its wheel (so README's test command needs
nothing but Python). Its package is not imported (it would want ScanCode's plugin system):
only its ``bin/7z`` is used.
Info-ZIP ``unzip`` has no registry package: tests that need it skip with that reason, and
CI installs it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def _seven_zip() -> str | None:
    found = shutil.which("7zz") or shutil.which("7z")
    if found:
        return found
    spec = importlib.util.find_spec("extractcode_7z")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = os.path.join(folder, "bin", "7z")
        if os.access(binary, os.X_OK):
            return binary
    return None


SEVEN_ZIP = _seven_zip()
UNZIP = shutil.which("unzip")
needs_7zip = pytest.mark.skipif(
    not SEVEN_ZIP, reason="7-Zip not found: install the test extra (extractcode-7z) or 7zip")
needs_unzip = pytest.mark.skipif(
    not UNZIP, reason="Info-ZIP unzip not installed (no PyPI package has it; CI installs "
                      "Debian's unzip)")
