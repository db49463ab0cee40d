"""Old import path of :mod:`datalad_rdr.zenodo.sync`, kept for tests/test_metadata.py; to be
removed once that imports ``data_doi`` from :mod:`datalad_rdr.zenodo.state`."""

from .zenodo.state import data_doi as _data_doi  # noqa: F401
from .zenodo.sync import sync  # noqa: F401
