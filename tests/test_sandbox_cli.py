"""`datalad-rdr-sandbox` as a person starts it: a JSON line first, a clean stop on a signal."""

import json
import os
import signal
import subprocess
import sys

import requests


def test_sandbox_command_prints_json_and_stops_on_sigterm(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "datalad-rdr-sandbox")
    proc = subprocess.Popen([exe, "--profile", "rdr", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert {"dataverse_url", "api_token", "collection"} <= set(info)
        assert info["dataverse_url"].startswith("http://127.0.0.1:")
        r = requests.get(info["dataverse_url"] + "/api/info/version")
        assert r.json()["data"]["version"] == "6.7.1"
        r = requests.post(f"{info['dataverse_url']}/api/dataverses/{info['collection']}"
                          "/datasets", headers={"X-Dataverse-key": info["api_token"]},
                          json={})
        assert r.status_code == 400  # reached the API, refused an empty dataset
        r = requests.get(info["zenodo_url"] + "/user/records",
                         headers={"Authorization": f"Bearer {info['zenodo_token']}"})
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    assert "sandbox stopped" in proc.stderr.read()


def test_sandbox_command_rejects_an_unknown_profile():
    exe = os.path.join(os.path.dirname(sys.executable), "datalad-rdr-sandbox")
    r = subprocess.run([exe, "--profile", "nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "invalid choice: 'nope'" in r.stderr


def test_sandbox_command_review_makes_a_curated_installation(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "datalad-rdr-sandbox")
    proc = subprocess.Popen([exe, "--review", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["review"] is True
        sys.path.insert(0, os.path.dirname(__file__))
        from conftest import citation_json

        url, key = info["dataverse_url"], {"X-Dataverse-key": info["api_token"]}
        pid = requests.post(f"{url}/api/dataverses/{info['collection']}/datasets",
                            headers=key, json=citation_json()).json()["data"]["persistentId"]
        r = requests.post(f"{url}/api/datasets/:persistentId/actions/:publish", headers=key,
                          params={"persistentId": pid, "type": "major"})
        assert r.status_code == 401
        assert "not permitted to perform requested action" in r.json()["message"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
