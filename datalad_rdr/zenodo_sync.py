"""Old import path, kept for tests/test_metadata.py only; remove it once that imports
``data_doi`` from :mod:`datalad_rdr.zenodo.state` (the code is in :mod:`datalad_rdr.zenodo`)."""

from .zenodo.state import data_doi as _data_doi  # noqa: F401
