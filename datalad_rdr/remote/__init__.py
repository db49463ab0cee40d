"""The ``rdr`` git-annex special remote: annexed files read from (and stored into) RDR bundles."""
