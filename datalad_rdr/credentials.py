"""API tokens from datalad-next's credential manager; never logged, never in git config."""

from __future__ import annotations

from urllib.parse import urlsplit

from datalad_next.credman import CredentialManager


class CredentialError(Exception):
    pass


def realm(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def obtain_token(config, url: str, name: str | None = None,
                 default_name: str = "rdr") -> tuple[str, str]:
    """The token for ``url``: the named credential, else the last used one for its realm,
    else the credential ``default_name`` (so DATALAD_CREDENTIAL_RDR_SECRET works)."""
    credman = CredentialManager(config)
    attempts = ([dict(name=name)] if name else
                [dict(query_props={"realm": realm(url)}), dict(name=default_name)])
    for kwargs in attempts:
        try:
            found, cred = credman.obtain(type_hint="token", expected_props=["secret"],
                                         **kwargs)
            return found or kwargs.get("name") or "", cred["secret"]
        except ValueError:
            continue
    env = f"DATALAD_CREDENTIAL_{(name or default_name).upper().replace('-', '_')}_SECRET"
    raise CredentialError(
        f"no API token for {realm(url)}: set {env}, or store one with "
        f"'datalad credentials set {name or default_name} secret=<token> "
        f"realm={realm(url)}'")
