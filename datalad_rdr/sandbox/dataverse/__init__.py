"""The sandbox's Dataverse: the native API this project uses, as Dataverse 6.7.1 answers it.

One WSGI application, :class:`DataverseSandbox` (``app``), assembled from one module per
part of the API: ``installation`` (version, users, licenses, metadata blocks, collections),
``datasets`` (datasets, versions, metadata edits), ``publish`` (locks, review, publication),
``upload`` (direct upload and registration of files), ``files`` (delete, restrict, file
metadata, cleanStorage), ``access`` (downloads), ``embargo`` (file embargoes and the test
clock). State is in ``model``, configuration in ``settings``, the answer envelope in
``answers``.
"""

from .answers import ApiError
from .app import DataverseSandbox
from .embargo import Clock, Embargo
from .model import DataFile, Dataset, FileMetadata, Version, new_file_name
from .settings import LICENSE_SETS, DataverseSettings

__all__ = ["ApiError", "Clock", "DataFile", "Dataset", "DataverseSandbox", "DataverseSettings",
           "Embargo", "FileMetadata", "LICENSE_SETS", "Version", "new_file_name"]
