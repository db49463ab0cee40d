"""What a Dataverse installation's admin configures, and the constants that follow from it."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
CHUNK = MIB

CHECKSUM_TYPES = ("MD5", "SHA-1", "SHA-256", "SHA-512")

# Datasets.dataFilePattern: the names cleanStorage may delete.
STORED_NAME = re.compile(r"[0-9a-f]{11}-[0-9a-f]{12}")

# The licenses an installation offers, {name: uri}, first = default. Stock Dataverse ships
# these two; RDR names its CC BY in SPDX style with an https URI (a published RDR dataset,
# fidelity row 33). RDR's CC0 is not seen anywhere: SPDX naming is assumed.
LICENSE_SETS = {
    "dataverse": {
        "CC0 1.0": "http://creativecommons.org/publicdomain/zero/1.0",
        "CC BY 4.0": "http://creativecommons.org/licenses/by/4.0",
    },
    "rdr": {
        "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/",
        "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    },
}


@dataclass
class DataverseSettings:
    """What a Dataverse installation's admin configures (JVM options and settings)."""

    api_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    admin_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    other_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    collection: str = "rdr-sandbox"
    version: str = "6.7.1"
    store_id: str = "s3"
    authority: str = "10.5072"
    shoulder: str = "FK2/"
    direct_upload: bool = True  # dataverse.files.<id>.upload-redirect
    download_redirect: bool = True  # dataverse.files.<id>.download-redirect
    part_size: int = 1024 * MIB  # dataverse.files.<id>.min-part-size
    url_lifetime: int = 3600  # seconds (url-expiration-minutes, in seconds for tests)
    tagging: bool = True  # not disable-tagging
    max_file_size: int | None = None  # :MaxFileUploadSizeInBytes
    dataset_file_limit: int | None = None  # default-dataset-file-count-limit
    zip_unpack_limit: int = 1000  # :ZipUploadFilesLimit
    publish_delay: float = 0.3  # seconds the finalizePublication lock is held
    # Bytes per second at which a major release re-reads the dataset's files from the store
    # (RDR reads them from Swift through Payara); None reads as fast as the disk allows.
    validation_rate: float | None = None
    # Metadata blocks with required fields beyond citation: {block: [field, ...]}.
    required_blocks: dict = field(default_factory=dict)
    # Further stock blocks the collection has enabled, all fields optional ("geospatial").
    extra_blocks: tuple = ()
    # Fields a collection requires beyond the installation (input levels):
    # {collection alias: [field name, ...]}.
    input_levels: dict = field(default_factory=dict)
    # Which license list the installation offers (LICENSE_SETS).
    license_set: str = "dataverse"
    # A curated installation: depositors may not publish, only submit for review.
    review: bool = False
    # Registrations that overlap on one dataset fail as OptimisticLockException 500s.
    optimistic_locking: bool = True
    # Which citation block is installed: "dataverse" (stock 6.7.1) or "rdr" (KU Leuven's,
    # with its required fields and vocabularies; see metadatablocks.py).
    citation: str = "dataverse"
    # :MaxEmbargoDurationInMonths: None (unset) or 0 = no embargoes, -1 = no maximum.
    max_embargo_months: int | None = None

    def __post_init__(self):
        # Dataverse uses 5 MiB when a smaller part size is configured (ref §1.1).
        self.part_size = max(int(self.part_size), MIN_PART_SIZE)
