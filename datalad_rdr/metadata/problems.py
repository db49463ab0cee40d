"""What is wrong with the metadata, all of it at once: one line per problem.

A new user filling in the template met one missing field per export run (new-user-trial
1.4); the file's checks and the server's are collected and reported together instead.
"""

from __future__ import annotations

from dataclasses import dataclass

METADATA = ".datalad/rdr/metadata.yaml"


@dataclass
class Problem:
    text: str  # "'title' is missing; add 'title: ...'": the cause and the fix
    field: str | None = None  # the metadata file's entry, e.g. "authors[0].orcid"
    line: int | None = None  # in the metadata file, when known
    in_file: bool = True  # False: about the server or the files, not a line of the file

    def show(self) -> str:
        if not self.in_file:
            return self.text
        return f"line {self.line}: {self.text}" if self.line else self.text


class MetadataError(Exception):
    """Missing or invalid metadata; the message names each field and what to do.

    ``field`` is the first problem's field; ``problems`` lists them all.
    """

    def __init__(self, message: str, field: str | None = None,
                 problems: list[Problem] | None = None):
        super().__init__(message)
        self.field = field
        self.problems = problems or [Problem(message, field, in_file=False)]

    @classmethod
    def of(cls, problems: list[Problem]) -> MetadataError:
        if len(problems) == 1:
            p = problems[0]
            where = f", line {p.line}" if p.line else ""
            message = f"{METADATA}{where}: {p.text}" if p.in_file else p.text
        else:
            message = (f"{METADATA}: {len(problems)} problems; fix them all, 'datalad save', "
                       f"and export again:\n" + "\n".join(f"  {p.show()}" for p in problems))
        return cls(message, problems[0].field, problems)


class Problems:
    """Collects problems; `raise_any` raises them together."""

    def __init__(self, lines: dict[str, int] | None = None):
        self.lines = lines or {}
        self.found: list[Problem] = []

    def add(self, name: str | None, text: str, in_file: bool = True) -> None:
        self.found.append(Problem(text, name, self.line(name) if in_file else None, in_file))

    def line(self, name: str | None) -> int | None:
        """The YAML line of an entry, else of the nearest enclosing one that is there."""
        while name:
            if name in self.lines:
                return self.lines[name]
            cut = max(name.rfind("."), name.rfind("["))
            name = name[:cut] if cut > 0 else ""
        return None

    def raise_any(self) -> None:
        if self.found:
            raise MetadataError.of(self.found)
