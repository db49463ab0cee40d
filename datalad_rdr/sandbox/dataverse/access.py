"""Downloads through the access API: who may read a file, the redirect to the store, ranges
streamed as Dataverse streams them.
"""

from __future__ import annotations

from urllib.parse import quote

from werkzeug.routing import Rule
from werkzeug.wrappers import Response

from ..s3 import parse_range
from .answers import ApiError
from .model import DataFile
from .settings import CHUNK


class AccessEndpoints:
    """Mixed into DataverseSandbox: ``GET /api/access/datafile/{id}``."""

    def access_datafile(self, request, fid):
        user = self.user(request)
        try:
            df = self.datafiles[int(fid)]
        except (ValueError, KeyError):
            raise ApiError(404, f"File with ID {fid} not found.") from None
        ds, fm = self.find_filemeta(fid)
        # Public if any release holds it unrestricted: a file removed in 2.0 can still be
        # read from 1.0 (Access.java, via the released FileMetadatas).
        # An embargo whose date lies ahead closes it as a restriction would.
        public = not self.under_embargo(df) and any(
            f.datafile is df and not f.restricted for v in ds.released for f in v.files)
        if not public and not self.can_edit(user, ds):
            raise ApiError(403, f"'/api/v1/access/datafile/{fid}' you are not authorized "
                                f"to access this object via this api endpoint. Please "
                                f"check your code for typos, or consult our API guide at "
                                f"http://guides.dataverse.org.")
        if df.released and request.args.get("gbrecs", "").lower() != "true":
            # Access.java writes a guestbook response and a Make Data Count entry for
            # each download of a released file, unless gbrecs=true.
            self.guestbook_entries[df.id] += 1
        disposition = f"attachment; filename*=UTF-8''{quote(fm.label)}"
        if self.settings.download_redirect:
            url = self.s3.generate_presigned_url(
                "get_object", ExpiresIn=self.settings.url_lifetime,
                Params={"Bucket": self.bucket, "Key": df.key,
                        "ResponseContentDisposition": disposition,
                        "ResponseContentType": df.content_type})
            return Response(status=303, headers={"Location": url})
        return self._stream(request, df, disposition)

    def _stream(self, request, df: DataFile, disposition: str) -> Response:
        """Serve the bytes through the API, as Dataverse does without download redirect.

        A range is cut from a GET of the whole object: S3AccessIO.setOffset skips (reads
        and discards) everything before it, so a member near the end of a 20 GB bundle
        costs 20 GB read from the store. ``s3_bytes_read`` and ``download_reads`` count it.
        """
        headers = {"Content-Disposition": disposition, "Accept-Ranges": "bytes",
                   "Content-Type": df.content_type}
        size, status, start = df.filesize, 200, 0
        rng = request.headers.get("Range")
        if rng:
            # Dataverse answers 416 to any range it cannot serve (ref §2.10).
            parsed = parse_range(rng, size)
            if parsed is None or parsed == "invalid":
                raise ApiError(416, "Requested Range Not Satisfiable")
            start, end = parsed
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            size, status = end - start + 1, 206
        headers["Content-Length"] = str(size)
        body = self.s3.get_object(Bucket=self.bucket, Key=df.key)["Body"]
        read = [0]
        self.download_reads.append(read)

        def chunks():
            skip, remaining = start, size
            while remaining > 0:
                chunk = body.read(min(CHUNK, skip) if skip else min(CHUNK, remaining))
                if not chunk:
                    break
                read[0] += len(chunk)
                self.s3_bytes_read["download"] += len(chunk)
                if skip:
                    skip -= len(chunk)
                    continue
                remaining -= len(chunk)
                yield chunk
            body.close()

        return Response(chunks(), status=status, headers=headers, direct_passthrough=True)


RULES = [
    Rule("/api/access/datafile/<fid>", endpoint="access_datafile", methods=["GET"]),
]
