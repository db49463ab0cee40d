project = "datalad-rdr"
author = "datalad-rdr developers"
extensions = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
