"""DataLad extension: publish datasets to KU Leuven RDR (Dataverse) and Zenodo."""

__version__ = "0.1.0.dev0"

# Commands are registered by the issues that build them; nothing half-done is listed.
command_suite = (
    "Publish datasets to RDR (Dataverse) as ZIP bundles, and sync code to Zenodo",
    [
        ("datalad_rdr.commands.rdr_export", "RdrExport", "rdr-export", "rdr_export"),
        ("datalad_rdr.commands.rdr_clone", "RdrClone", "rdr-clone", "rdr_clone"),
        ("datalad_rdr.commands.zenodo_sync", "ZenodoSync", "zenodo-sync", "zenodo_sync"),
    ],
)
