"""Constraints of our commands' parameters that datalad-next does not have."""

from __future__ import annotations

from datalad_next.constraints import Constraint

from ..sizes import human, parse_size


class EnsureParsedSize(Constraint):
    """A byte count as :func:`parse_size` reads it (``4GB``, ``500MiB``, ``1.5e9``), at
    least ``min``; for command parameters such as ``--max-bundle-size``."""

    def __init__(self, min: int = 0):
        super().__init__()
        self._min = min

    def __call__(self, value) -> int:
        try:
            size = parse_size(value)
        except ValueError as exc:
            # raise_for formats its message: braces in what the user typed stay literal
            self.raise_for(value, str(exc).replace("{", "{{").replace("}", "}}"))
        if size < self._min:
            self.raise_for(value, f"must be at least {self._min} bytes ({human(self._min)})")
        return size

    def short_description(self) -> str:
        return "size in bytes, or with a unit: 4GB, 500MiB"
