"""One credential workflow for RDR and Zenodo (datalad_rdr.credentials), with credentials
given as datalad-next reads them from the environment."""

from __future__ import annotations

import pytest
from datalad.config import ConfigManager

from datalad_rdr.credentials import CredentialError, obtain, obtain_token, realm


@pytest.fixture
def env(monkeypatch):
    def give(name, secret, realm_=None):
        monkeypatch.setenv(f"DATALAD_CREDENTIAL_{name.upper()}_SECRET", secret)
        if realm_:
            monkeypatch.setenv(f"DATALAD_CREDENTIAL_{name.upper()}_REALM", realm_)
    return give


def test_one_realm_rule_for_both_servers():
    assert realm("https://Zenodo.org/api/records/1") == "https://zenodo.org"
    assert realm("https://rdr.kuleuven.be") == realm("https://rdr.kuleuven.be/dataverse/x")
    assert realm("http://127.0.0.1:8080/api") != realm("http://127.0.0.1:8081/api")


def test_found_by_realm_written_as_any_url_of_the_server(env):
    env("myzenodo", "s3cret", "https://zenodo.org/api")
    cred = obtain(ConfigManager(), "https://zenodo.org/api", default_name="zenodo")
    assert (cred.name, cred.secret) == ("myzenodo", "s3cret")
    assert "s3cret" not in repr(cred)
    # the RDR callers' form
    env("myrdr", "other", "https://rdr.kuleuven.be")
    assert obtain_token(ConfigManager(), "https://rdr.kuleuven.be/api") == ("myrdr", "other")


def test_default_name_but_not_for_another_server(env):
    env("rdr", "tok")
    assert obtain_token(ConfigManager(), "https://rdr.kuleuven.be") == ("rdr", "tok")
    env("zenodo", "tok2", "https://zenodo.org")
    with pytest.raises(CredentialError, match="is for https://zenodo.org, not "
                                              "https://sandbox.zenodo.org"):
        obtain(ConfigManager(), "https://sandbox.zenodo.org/api", default_name="zenodo")


def test_missing_credential_says_how_to_set_it(env, monkeypatch):
    monkeypatch.delenv("DATALAD_CREDENTIAL_RDR_SECRET", raising=False)
    with pytest.raises(CredentialError, match=r"no API token for https://rdr.example.org: "
                                              r"set DATALAD_CREDENTIAL_RDR_SECRET"):
        obtain(ConfigManager(), "https://rdr.example.org/api")
    with pytest.raises(CredentialError, match="no credential 'mine'"):
        obtain(ConfigManager(), "https://rdr.example.org", name="mine")


def test_the_environments_default_secret_comes_first(env):
    # set for this session: it beats a credential of the same realm found by a search
    env("myrdr", "stored", "http://127.0.0.1:8080")
    env("rdr", "session")
    assert obtain_token(ConfigManager(), "http://127.0.0.1:8080/api") == ("rdr", "session")
    # unless it names another server: then the realm's credential is the one
    env("rdr", "session", "http://127.0.0.1:8081")
    assert obtain_token(ConfigManager(), "http://127.0.0.1:8080/api") == ("myrdr", "stored")
