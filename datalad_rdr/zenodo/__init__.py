"""Zenodo (InvenioRDM) for ``datalad zenodo-sync``: one module per stage.

- :mod:`.client` -- the HTTP client; the only module that reads Zenodo's JSON.
- :mod:`.config` -- StepUp's zenodo.yaml, read and checked.
- :mod:`.members` -- which files, folders and ZIPs go up.
- :mod:`.decide` -- what differs between the dataset and the record.
- :mod:`.sync` -- one run: read, decide, send, publish (:func:`.sync.sync`).
- :mod:`.state` -- what is remembered in the dataset and told to git-annex.
"""
