"""The sandbox's Zenodo: the InvenioRDM REST API (``/api/records``) as zenodo.org answers it.

The contract is ../shared/reference/invenio-rdm-api.md ("ref §"); where the reference is
silent or uncertain the behaviour was read from the server's own source (InvenioRDM's
invenio-drafts-resources, invenio-records-resources, invenio-rdm-records, invenio-files-rest
and zenodo-rdm) and the choice is listed in docs/sandbox-zenodo.md. What it does, in short:

- drafts and records with numeric ids; a parent (concept) per dataset; version DOIs and the
  concept DOI ``10.5281/zenodo.<id>`` minted on the first publish;
- partial validation when a draft is saved (200/201 with ``errors`` in the body), strict
  validation on publish (400);
- the three-step upload (init, content, commit), with the bytes streamed to and from an S3
  server through boto3, never held in memory; files of a published record are locked
  (changing them needs a new version); the per-record limits of 100 files and 50 GB;
- Zenodo's quirk (ref §1.0): the records routes answer in Zenodo's legacy JSON unless the
  request carries the header ``Accept: application/vnd.inveniordm.v1+json``;
- for tests, under ``/_sandbox/`` (a path zenodo.org does not have): request and byte
  counters, and injectable faults (429 with Retry-After, an nginx-style HTML 504, ...).

Wiring::

    app = InvenioSandbox(InvenioSettings(tokens={"secret": "1"}), s3_client, "bucket")
    server = ServedApp(app).start()    # the API is then at server.url + "/api"
"""

from .answers import ApiError
from .app import InvenioSandbox
from .model import Parent, Record, Snapshot, StoredFile
from .settings import RDM_JSON, ZenodoFault, InvenioSettings, InvenioStats

__all__ = ["ApiError", "ZenodoFault", "InvenioSandbox", "InvenioSettings", "InvenioStats", "Parent",
           "RDM_JSON", "Record", "Snapshot", "StoredFile"]
