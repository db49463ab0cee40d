"""Split volumes: one bundle's ZIP written as several files, for a file over the cap.

A bundle that holds a file larger than the cap is still one ZIP (zip64 where sizes need
it), cut into volumes of ``cap`` bytes, the last one shorter: ``raw.zip.001``,
``raw.zip.002``, ... That is what ``7z a -v20g`` writes (a plain byte split; the ZIP's disk
numbers stay 0, so every offset in it is an offset in the volumes joined), so
``7z x raw.zip.001`` restores the files as the RDR guide tells recipients, and the members'
offsets in the manifest are offsets in the whole ZIP.

Each volume is its own upload source, a slice of the one layout: the uploader's check pass
over a volume checks the members whose last byte lies in it, and the volumes of one layout
share its running checks across each cut (:mod:`datalad_rdr.zipranges`).
"""

from __future__ import annotations

from collections.abc import Iterator

#: Volumes are not ZIP files on their own: the server must not take one for a ZIP.
VOLUME_MIME = "application/octet-stream"


def cuts(size: int, volume_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each volume of a ZIP of ``size`` bytes."""
    if volume_size < 1:
        raise ValueError(f"volume size {volume_size} is not a byte count")
    return [(start, min(start + volume_size, size))
            for start in range(0, max(size, 1), volume_size)]


def labels(filename: str, count: int) -> list[str]:
    """The volumes' file names, numbered as 7-Zip numbers them (three digits, more when
    there are more than 999)."""
    width = max(3, len(str(count)))
    return [f"{filename}.{n:0{width}d}" for n in range(1, count + 1)]


class Volume:
    """Bytes ``[start, end)`` of a laid-out ZIP as an upload source of its own."""

    def __init__(self, layout, start: int, end: int):
        self.layout, self.start = layout, start
        self.size = end - start

    def iter_range(self, start: int, end: int) -> Iterator[bytes]:
        return self.layout.iter_range(self.start + start, self.start + end)

    def iter_raw(self, start: int, end: int) -> Iterator[bytes]:
        return self.layout.iter_raw(self.start + start, self.start + end)
