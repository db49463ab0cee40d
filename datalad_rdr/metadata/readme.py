"""The README's opening prose: the description when the metadata file gives none."""

from __future__ import annotations

import re


def first_paragraphs(readme_text: str, limit: int = 1500) -> str:
    """The README's opening prose: the paragraphs before the second heading, at most `limit`
    characters (whole paragraphs; at least the first one)."""
    lines = readme_text.replace("\r\n", "\n").split("\n")
    paragraphs: list[str] = []
    current: list[str] = []
    seen_text = False
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        heading = (line.lstrip().startswith("#")
                   or (line.strip() and re.fullmatch(r"[=\-~^*+#`]{3,}", nxt.strip() or "x")))
        underline = (re.fullmatch(r"[=\-~^*+#`]{3,}", line.strip() or "x")
                     and i > 0 and lines[i - 1].strip())
        if heading or underline:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if seen_text:
                break
            continue
        if not line.strip():
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        seen_text = True
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    out: list[str] = []
    for p in paragraphs:
        if out and len("\n\n".join(out + [p])) > limit:
            break
        out.append(p)
    return "\n\n".join(out)


#: The dataset's README, first found: these names at the top level, in this order, then the
#: first other top-level name that starts with "README" in any case (``README-en.md``).
#: Pre-flight, the public documents and the description all take the same one.
README_NAMES = ("README", "README.md", "README.rst", "README.txt")


def pick_readme(names) -> str | None:
    """The README among a commit's paths (or a folder's names), None when there is none."""
    top = {n for n in names if "/" not in n}
    for name in README_NAMES:
        if name in top:
            return name
    others = sorted(n for n in top if n.upper().startswith("README"))
    return others[0] if others else None
