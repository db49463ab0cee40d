"""The dataset's publication metadata, kept in a versioned file in the dataset.

``.datalad/rdr/metadata.yaml`` holds what RDR asks for (title, authors, contact, license,
access, ...). The export reads it, as the exported commit has it, before anything is
uploaded:

- :mod:`.file` reads and checks the file (every problem at once, with its YAML line) into a
  :class:`DatasetMetadata`; :mod:`.tree` reads the commit, :mod:`.readme` the description;
- :mod:`.server` maps it onto the server's metadata blocks and checks it against the
  collection's required fields, vocabularies and licenses; :mod:`.fields` says where RDR's
  own fields go;
- :mod:`.draft` brings an existing draft in line with it;
- :mod:`.template` writes the commented template for a new user.
"""

from .draft import changes, merged_version, server_fields, sync_draft, _plain  # noqa: F401
from .fields import (CONFIG_KEYS, RdrFields, file_format, rdr_fields,  # noqa: F401
                     technical_formats)
from .file import (ACCESS, LICENSES, TEMPLATE_HINT, DatasetMetadata, Grant,  # noqa: F401
                   Person, load, parse)
from .problems import METADATA, MetadataError, Problem  # noqa: F401
from .readme import first_paragraphs  # noqa: F401
from .server import Mapping, server_blocks, server_mapping  # noqa: F401
from .template import TEMPLATE, run_template, template, write_template  # noqa: F401


def missing_message() -> str:
    return (f"the dataset has no {METADATA} (title, authors, contact, subject, license, "
            f"access, ... that RDR requires); run 'datalad rdr-export --metadata-template', "
            f"fill it in, 'datalad save', and export again; nothing was uploaded")
