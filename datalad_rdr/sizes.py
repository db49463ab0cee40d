"""Byte counts as people write and read them: ``4GB``, ``500MiB``, ``1.5e9``; "2.1 GB"."""

from __future__ import annotations

# Nothing of DataLad here: the special remote reads bundlesize= with parse_size, and starts
# without DataLad (remote/process.py). The command parameter is commands/constraints.py's.

GB = 1000**3
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": GB, "TB": 1000**4,
          "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}


def parse_size(text: str | int) -> int:
    """Bytes of ``4GB``, ``500MiB``, ``1000000`` or ``1.5e9``; ValueError saying how to write
    one otherwise."""
    if isinstance(text, int):
        return text
    value = str(text).strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    unit = value[len(number):]
    try:
        if unit not in _UNITS or not number:
            raise ValueError
        return int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):  # OverflowError: "inf", "1e999"
        raise ValueError(f"not a size: {text!r} (write e.g. 4GB, 500MiB or 1000000)") \
            from None


def human(n: int) -> str:
    """``n`` bytes for a message: "999 bytes", "12.3 kB", "4.50 GB" (decimal units, as RDR's
    guide writes its limits), with enough digits that two different sizes never read alike
    at a glance."""
    if n < 1000:
        return f"{n} bytes"
    for unit, size in (("TB", 1000**4), ("GB", GB), ("MB", 1000**2), ("kB", 1000)):
        if n >= size:
            value = n / size
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{n} bytes"
