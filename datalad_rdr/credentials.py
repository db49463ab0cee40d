"""API tokens for RDR and Zenodo, from datalad-next's credential manager.

One workflow for both servers, as datalad-next's ``download`` and datalad-dataverse do it:

1. **obtain** (:func:`obtain`): the credential named by ``--credential``; else the secret
   of the default name (``rdr``, ``zenodo``) given in the environment
   (``DATALAD_CREDENTIAL_RDR_SECRET``), which is this session's choice; else the last used
   credential whose ``realm`` is the server's; else the stored credential of the default
   name. The environment's secret needs no look-up in the keyring (loading its backends
   takes 0.3 s of CPU).
2. **use** its :attr:`Credential.secret`.
3. **mark it used** (:meth:`Credential.mark_used`) only once the server accepted it, so that
   a refused token never becomes the one picked next time.

The realm rule (:func:`realm`): a server is ``scheme://host[:port]``; a credential's
``realm`` may be written as any URL on that server (``https://zenodo.org/api`` and
``https://zenodo.org`` are the same realm). A default-name credential whose realm is another
server's is not sent there.

The secret is never logged and never written to git config: it stays where it came from
(the keyring or the environment); marking a credential used writes only ``last-used`` (and
the properties it already had) through the credential manager.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

lgr = logging.getLogger("datalad.rdr.credentials")


class CredentialError(Exception):
    pass


def realm(url: str) -> str:
    """The server of ``url``, as credentials name it: ``scheme://host[:port]``."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def env_variable(name: str) -> str:
    """Where datalad-next reads the secret of credential ``name`` from the environment."""
    return f"DATALAD_CREDENTIAL_{name.upper().replace('-', '_')}_SECRET"


def how_to_set(name: str, url: str) -> str:
    """The fix for a missing token, for a message."""
    return (f"set {env_variable(name)}, or store one with 'datalad credentials set {name} "
            f"secret=<token> realm={realm(url)}'")


@dataclass
class Credential:
    """A token for one server; ``name`` is None when it did not come from the manager."""

    name: str | None
    secret: str = field(repr=False)
    source: str  # for messages: "credential zenodo", "token file ~/.zenodo"; never the secret
    _props: dict = field(default_factory=dict, repr=False)
    _config: object = field(default=None, repr=False)

    def mark_used(self) -> None:
        """Remember the credential as the last one that worked for its realm.

        Call it only after the server accepted the token. A credential given by environment
        variables is left alone: writing it would copy a secret the user gave for one session
        into the keyring.
        """
        if self.name is None or self._config is None or env_variable(self.name) in os.environ:
            return
        try:
            _manager(self._config).set(self.name, _lastused=True, **self._props)
        except Exception as exc:  # noqa: BLE001 - remembering is a convenience only
            lgr.debug("could not mark credential %s as used: %s", self.name,
                      type(exc).__name__)


def _manager(config):
    # imported at the first use: the special remote starts without DataLad (remote/process.py)
    from datalad_next.credman import CredentialManager

    return CredentialManager(config)


def _same_realm(cred: dict, url: str) -> bool:
    return bool(cred.get("realm")) and realm(cred["realm"]) == realm(url)


def obtain(config, url: str, name: str | None = None,
           default_name: str = "rdr") -> Credential:
    """The credential for the server of ``url`` (see the module docstring for the order).

    Raises :class:`CredentialError` saying how to set one.
    """
    credman = _manager(config)
    if not name and os.environ.get(env_variable(default_name)):
        cred = credman.get(default_name, _prompt=None, _type_hint="token")
        if cred and cred.get("secret") and (not cred.get("realm") or _same_realm(cred, url)):
            return Credential(default_name, cred["secret"], f"credential {default_name}",
                              cred, config)
    if name:
        cred = credman.get(name, _prompt=None, _type_hint="token")
        if not cred or not cred.get("secret"):
            raise CredentialError(f"no credential {name!r} with a secret: "
                                  f"{how_to_set(name, url)}")
        return Credential(name, cred["secret"], f"credential {name}", cred, config)
    for found, cred in credman.query(_sortby="last-used"):
        if cred.get("secret") and _same_realm(cred, url):
            return Credential(found, cred["secret"], f"credential {found}", cred, config)
    cred = credman.get(default_name, _prompt=None, _type_hint="token")
    if cred and cred.get("secret"):
        if cred.get("realm") and not _same_realm(cred, url):
            raise CredentialError(
                f"credential {default_name!r} is for {realm(cred['realm'])}, not "
                f"{realm(url)}: give --credential, or {how_to_set(default_name, url)}")
        return Credential(default_name, cred["secret"], f"credential {default_name}", cred,
                          config)
    raise CredentialError(f"no API token for {realm(url)}: {how_to_set(default_name, url)}")


def obtain_token(config, url: str, name: str | None = None,
                 default_name: str = "rdr") -> tuple[str, str]:
    """(credential name, secret) for ``url``: :func:`obtain` for callers that need no
    :meth:`Credential.mark_used`."""
    cred = obtain(config, url, name, default_name)
    return cred.name or "", cred.secret
