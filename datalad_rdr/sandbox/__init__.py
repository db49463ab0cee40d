"""A local stand-in for RDR: a Dataverse API server and an InvenioRDM (Zenodo) API server,
whose bytes live in moto's S3 server behind a gate that checks presigned URLs as S3 does.

Start it with ``datalad-rdr-sandbox`` (see :mod:`datalad_rdr.sandbox.cli`) or, in Python,
with :class:`datalad_rdr.sandbox.cli.Sandbox`.
"""
