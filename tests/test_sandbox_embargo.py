"""File embargoes in the sandbox's Dataverse, as Dataverse 6.7.1 answers them
(/work/notes/embargo-contract.md): checks and messages, the maximum duration, the listing
JSON, downloads refused until the sandbox's clock passes the date."""

import json
import os
import signal
import subprocess
import sys

import pytest
import requests

from conftest import DV
from test_sandbox_dataverse import direct_upload, download, spec, wait_unlocked

SET = "/api/datasets/:persistentId/files/actions/:set-embargo"
UNSET = "/api/datasets/:persistentId/files/actions/:unset-embargo"
SETTING = "/api/info/settings/:MaxEmbargoDurationInMonths"
NOT_PERMITTED = ("Either the files are released and user is not a superuser or user does not "
                 "have EditDataset permissions")
TODAY = "2026-01-31"  # a month end: the maximum is clamped as Java's plusMonths does


def add(dv, pid, *names):
    """Direct-upload one small bundle per name into the draft; their DataFile ids."""
    specs = []
    for name in names:
        data = name.encode() * 100
        sid = direct_upload(dv, pid, data, tagging=dv.sandbox.dataverse_settings.tagging)
        specs.append(spec(sid, name, data))
    r = dv.add_files(pid, specs)
    assert r.status_code == 200, r.text
    ids = {f["dataFile"]["filename"]: f["dataFile"]["id"] for f in dv.files(pid)}
    return [ids[name] for name in names]


def embargo(dv, pid, ids, date="2026-06-30", reason="paper in review", path=SET, **body):
    payload = {"dateAvailable": date, "reason": reason, "fileIds": ids, **body}
    for key in [k for k, v in payload.items() if v is None]:
        del payload[key]
    return dv.call("POST", path, params={"persistentId": pid}, data=json.dumps(payload))


def unset(dv, pid, ids):
    return dv.call("POST", UNSET, params={"persistentId": pid},
                   data=json.dumps({"fileIds": ids}))


def publish(dv, pid):
    r = dv.call("POST", "/api/datasets/:persistentId/actions/:publish",
                params={"persistentId": pid, "type": "major"})
    assert r.status_code == 200, r.text
    wait_unlocked(dv, pid)


def error(r, status, message):
    assert r.status_code == status, r.text
    assert r.json()["message"] == message


@pytest.fixture
def today(sandbox):
    sandbox.dataverse.clock.set(TODAY)
    return sandbox


def test_embargo_shows_in_the_listing_and_unset_removes_it(today, dv):
    pid = dv.create_dataset()
    a, b = add(dv, pid, "a.zip", "b.zip")
    r = embargo(dv, pid, [a])
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "OK", "data": {"message": "Files were embargoed"}}
    files = {f["dataFile"]["id"]: f["dataFile"] for f in dv.files(pid)}
    assert files[a]["embargo"] == {"dateAvailable": "2026-06-30", "reason": "paper in review"}
    assert "embargo" not in files[b]  # absent, not null
    # Setting it again changes the date: one embargo per file.
    assert embargo(dv, pid, [a, b], date="2026-03-01", reason="").status_code == 200
    version = dv.call("GET", "/api/datasets/:persistentId/versions/:draft",
                      params={"persistentId": pid}).json()["data"]
    assert [f["dataFile"]["embargo"] for f in version["files"]] == [
        {"dateAvailable": "2026-03-01", "reason": ""}] * 2
    r = unset(dv, pid, [a])
    assert r.json() == {"status": "OK",
                        "data": {"message": "Embargo(es) were removed from files"}}
    files = {f["dataFile"]["id"]: f["dataFile"] for f in dv.files(pid)}
    assert "embargo" not in files[a] and "embargo" in files[b]
    r = unset(dv, pid, [a, b])
    assert r.status_code == 403
    assert r.json() == {"status": "ERROR", "files": [a],
                        "message": "The following files do not have embargoes or you do not "
                                   "have permission to remove their embargoes"}


@pytest.mark.parametrize("date, reason, status, message", [
    (TODAY, "r", 400, "Date available can not be in the past"),
    ("2025-12-31", "r", 400, "Date available can not be in the past"),
    ("2029-02-01", "r", 400, "Date available can not exceed MaxEmbargoDurationInMonths: 36"),
    ("2026-13-01", "r", 500, None),  # LocalDate.parse throws
    ("31/12/2026", "r", 500, None),
    (None, "r", 500, None),  # no dateAvailable: getString throws
    ("2026-06-30", None, 500, None),  # no reason: getString("reason") throws
])
def test_bad_date_or_reason_is_refused_and_nothing_changes(today, dv, date, reason, status,
                                                           message):
    pid = dv.create_dataset()
    (a,) = add(dv, pid, "a.zip")
    r = embargo(dv, pid, [a], date=date, reason=reason)
    assert r.status_code == status, r.text
    if message:
        assert r.json() == {"status": "ERROR", "message": message}
    else:
        assert "Internal server error" in r.json()["message"]
    assert "embargo" not in dv.files(pid)[0]["dataFile"]


def test_maximum_is_today_plus_n_months_clamped_to_the_month_end(make_sandbox):
    sb = make_sandbox("rdr", max_embargo_months=1)
    sb.dataverse.clock.set(TODAY)
    dv = DV(sb)
    pid = dv.create_dataset()
    (a,) = add(dv, pid, "a.zip")
    error(embargo(dv, pid, [a], date="2026-03-01"), 400,
          "Date available can not exceed MaxEmbargoDurationInMonths: 1")
    assert embargo(dv, pid, [a], date="2026-02-28").status_code == 200
    sb.dataverse.settings.max_embargo_months = -1  # no maximum
    assert embargo(dv, pid, [a], date="2126-01-01").status_code == 200


def test_who_and_which_files(today, dv):
    pid = dv.create_dataset()
    (a,) = add(dv, pid, "a.zip")
    other = dv.create_dataset(title="another")
    (foreign,) = add(dv, other, "f.zip")
    for token in ("", "not-a-token"):  # none, or one the server does not know
        error(embargo(DV(today, token=token), pid, [a]), 401, "Authentication is required.")
    error(embargo(DV(today, token=today.dataverse_settings.other_token), pid, [a]),
          403, NOT_PERMITTED)
    error(embargo(dv, "doi:10.5072/FK2/NOPE00", [a]), 404,
          "Dataset with Persistent ID doi:10.5072/FK2/NOPE00 not found.")
    error(embargo(dv, pid, [a, 999999]), 404, "File with ID 999999 not found.")
    error(embargo(dv, pid, [str(a)]), 400, f'Bad file id: "{a}".')
    error(embargo(dv, pid, [a, foreign]), 400, "Not all files belong to dataset")
    error(unset(dv, pid, [foreign]), 400, "Not all files belong to dataset")
    assert "embargo" not in dv.files(pid)[0]["dataFile"]


def test_released_files_only_by_a_superuser(today, dv):
    pid = dv.create_dataset()
    (a,) = add(dv, pid, "a.zip")
    publish(dv, pid)
    # No draft: refused before the files are looked at.
    error(embargo(dv, pid, [a]), 403, NOT_PERMITTED)
    error(unset(dv, pid, [a]), 403, NOT_PERMITTED)
    (b,) = add(dv, pid, "b.zip")  # a new draft, with a file never released
    r = embargo(dv, pid, [a, b])
    assert r.status_code == 403
    assert r.json() == {"status": "ERROR", "files": [a],
                        "message": "You do not have permission to embargo the following files"}
    assert embargo(dv, pid, [b]).status_code == 200
    admin = DV(today, token=today.dataverse_settings.admin_token)
    assert embargo(admin, pid, [a]).status_code == 200
    r = unset(dv, pid, [a])
    assert r.status_code == 403 and r.json()["files"] == [a]
    assert unset(admin, pid, [a]).status_code == 200


def test_embargoes_off_unless_the_setting_allows_them(make_sandbox):
    sb = make_sandbox("dataverse")  # stock Dataverse: the setting is unset
    dv = DV(sb)
    pid = dv.create_dataset()
    (a,) = add(dv, pid, "a.zip")
    error(requests.get(sb.dataverse_url + SETTING), 404,
          "Setting :MaxEmbargoDurationInMonths not found")
    error(embargo(dv, pid, [a]), 400, "No Embargoes allowed")
    error(unset(dv, pid, [a]), 400, "No Embargoes allowed")
    admin = sb.dataverse_url + "/api/admin/settings/:MaxEmbargoDurationInMonths"
    assert requests.put(admin, data="12").json() == {
        "status": "OK", "data": {":MaxEmbargoDurationInMonths": "12"}}
    assert requests.get(sb.dataverse_url + SETTING).json() == {
        "status": "OK", "data": {"message": "12"}}
    assert embargo(dv, pid, [a], date="2099-01-01").status_code == 400  # over 12 months
    requests.put(admin, data="0")
    error(embargo(dv, pid, [a]), 400, "No Embargoes allowed")
    requests.put(admin, data="-1")
    assert embargo(dv, pid, [a], date="2099-01-01").status_code == 200
    assert requests.delete(admin).status_code == 200
    error(unset(dv, pid, [a]), 400, "No Embargoes allowed")  # off again: cannot lift it


@pytest.mark.parametrize("redirect", [True, False])
def test_download_refused_until_the_clock_passes_the_date(make_sandbox, redirect):
    sb = make_sandbox("rdr", download_redirect=redirect)
    clock = sb.dataverse_url + "/api/admin/sandbox/clock"
    assert requests.put(clock, data=TODAY).json()["data"] == {"today": TODAY}
    dv = DV(sb)
    pid = dv.create_dataset()
    a, b = add(dv, pid, "a.zip", "b.zip")
    assert embargo(dv, pid, [a], date="2026-02-10").status_code == 200
    publish(dv, pid)
    anonymous = DV(sb, token="")
    released = anonymous.files(pid, version=":latest-published")
    assert {f["dataFile"]["id"]: f["dataFile"].get("embargo") for f in released} == {
        a: {"dateAvailable": "2026-02-10", "reason": "paper in review"}, b: None}
    refusal = (f"'/api/v1/access/datafile/{a}' you are not authorized to access this object "
               f"via this api endpoint. Please check your code for typos, or consult our API "
               f"guide at http://guides.dataverse.org.")
    error(download(dv, a, token=False, allow_redirects=False), 403, refusal)
    error(download(dv, a, token=False, allow_redirects=False,
                   headers={"Range": "bytes=0-9"}), 403, refusal)
    stranger = DV(sb, token=sb.dataverse_settings.other_token)
    error(download(stranger, a, allow_redirects=False), 403, refusal)
    assert download(dv, b, token=False).content == b"b.zip" * 100  # not embargoed
    assert download(dv, a).content == b"a.zip" * 100  # the depositor may
    requests.put(clock, data="2026-02-09")
    assert download(dv, a, token=False).status_code == 403
    requests.put(clock, data="2026-02-10")  # open on the date itself
    r = download(dv, a, token=False, headers={"Range": "bytes=0-4"})
    assert (r.status_code, r.content) == (206, b"a.zip")
    # The embargo stays in the listing after its date.
    assert anonymous.files(pid, ":latest-published")[0]["dataFile"]["embargo"][
        "dateAvailable"] == "2026-02-10"
    assert requests.put(clock, data="soon").status_code == 400
    requests.put(clock, data="")  # back to the real date
    assert requests.get(clock).json()["data"]["today"] != "2026-02-10"


def test_clock_advances_in_process(sandbox):
    clock = sandbox.dataverse.clock
    clock.set("2026-01-31")
    assert str(clock.advance(months=1)) == "2026-02-28"
    assert str(clock.advance(days=1)) == "2026-03-01"


def test_sandbox_command_today_sets_the_clock(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "datalad-rdr-sandbox")
    proc = subprocess.Popen([exe, "--today", "2030-05-01", "--data-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        r = requests.get(info["dataverse_url"] + "/api/admin/sandbox/clock")
        assert r.json()["data"] == {"today": "2030-05-01"}
        r = requests.get(info["dataverse_url"] + SETTING)
        assert r.json()["data"] == {"message": "36"}  # the rdr profile's maximum
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    r = subprocess.run([exe, "--today", "tomorrow"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "not a date (YYYY-MM-DD): tomorrow" in r.stderr
