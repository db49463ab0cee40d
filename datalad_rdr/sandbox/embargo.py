"""File embargoes in the sandbox's Dataverse, as Dataverse 6.7.1 has them.

The contract is /work/notes/embargo-contract.md (read from Datasets.createFileEmbargo and
removeFileEmbargo, FileUtil.isActivelyEmbargoed, Access.isAccessAuthorized, JsonPrinter): an
embargo belongs to a DataFile, so it shows in every version that holds the file; it is set or
changed only on files never released, unless by a superuser; while the date lies ahead a
released file is refused like a restricted one. ``:MaxEmbargoDurationInMonths`` unset or 0
turns embargoes off, -1 sets no maximum.

"Today" is the sandbox's :class:`Clock`, which tests move forward to pass an embargo's date,
in process (``sandbox.dataverse.clock``) or over HTTP (``PUT /api/admin/sandbox/clock``).
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
import threading
from dataclasses import dataclass

from werkzeug.routing import Rule

from .answers import TOUA_INVALID, ApiError, internal_error, ok, ok_message

MAX_DURATION = ":MaxEmbargoDurationInMonths"
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
NOT_PERMITTED = ("Either the files are released and user is not a superuser or user does not "
                 "have EditDataset permissions")


@dataclass
class Embargo:
    date_available: dt.date
    reason: str

    def json(self) -> dict:
        """JsonPrinter.json(Embargo): the date as ISO text; a null reason is dropped."""
        data = {"dateAvailable": self.date_available.isoformat()}
        if self.reason is not None:
            data["reason"] = self.reason
        return data


class Clock:
    """The sandbox's "today": the real date, unless a test has set or advanced it."""

    def __init__(self):
        self._fixed: dt.date | None = None
        self._lock = threading.Lock()

    def today(self) -> dt.date:
        return self._fixed or dt.date.today()

    def set(self, day: dt.date | str | None) -> None:
        """Fix today at ``day`` (a date or ``YYYY-MM-DD``); None returns to the real date."""
        with self._lock:
            self._fixed = dt.date.fromisoformat(day) if isinstance(day, str) else day

    def advance(self, days: int = 0, months: int = 0) -> dt.date:
        with self._lock:
            self._fixed = add_months(self.today(), months) + dt.timedelta(days=days)
            return self._fixed


def add_months(day: dt.date, months: int) -> dt.date:
    """LocalDate.plusMonths: the day of month is clamped to the target month's length."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return dt.date(year, month + 1, min(day.day, last))


def actively_embargoed(datafile, today: dt.date) -> bool:
    """FileUtil.isActivelyEmbargoed: open on the date itself, closed before it."""
    embargo = getattr(datafile, "embargo", None)
    return embargo is not None and embargo.date_available > today


class EmbargoEndpoints:
    """The embargo endpoints and settings API, mixed into the DataverseSandbox."""

    # -- settings -------------------------------------------------------------------
    def max_embargo_months(self) -> int | None:
        return self.settings.max_embargo_months

    def info_max_embargo(self, request):
        months = self.max_embargo_months()
        if months is None:  # Info.getSettingResponseByKey
            raise ApiError(404, f"Setting {MAX_DURATION} not found")
        return ok_message(str(months))

    def admin_setting_put(self, request, name):
        value = request.get_data(as_text=True)
        if name == MAX_DURATION:
            try:
                self.settings.max_embargo_months = int(value.strip())
            except ValueError:
                # The setting is stored as text; createFileEmbargo's Long.parseLong fails
                # later (NumberFormatException without "null": treated as 0 there).
                self.settings.max_embargo_months = 0
        return ok({name: value})

    def admin_setting_delete(self, request, name):
        if name == MAX_DURATION:
            self.settings.max_embargo_months = None
        return ok_message(f"Setting {name} deleted.")

    # -- the test clock (sandbox only) ------------------------------------------------
    def clock_view(self, request):
        return ok({"today": self.clock.today().isoformat()})

    def clock_put(self, request):
        text = request.get_data(as_text=True).strip()
        if text and not ISO_DATE.fullmatch(text):
            raise ApiError(400, f"Not a date (YYYY-MM-DD): {text}")
        self.clock.set(text or None)
        return self.clock_view(request)

    # -- set and unset ----------------------------------------------------------------
    def _embargo_caller(self, request, dsid) -> tuple[object, object]:
        """Steps 1-2 of both endpoints: an authenticated user and the dataset."""
        try:
            user = self.user(request)
        except ApiError:
            user = None
        if user is None:
            raise ApiError(401, "Authentication is required.")
        return user, self.find_dataset(request, dsid)

    def _check_may_embargo(self, user, ds) -> None:
        if ((not self.is_super(user) and ds.draft is None)
                or not self.can_edit(user, ds)):
            raise ApiError(403, NOT_PERMITTED)
        if not self.max_embargo_months():  # None (unset) or 0
            raise ApiError(400, "No Embargoes allowed")

    def _embargo_files(self, ds, ids) -> list:
        """The DataFiles named by ``fileIds``, each looked up as findDataFileOrDie does."""
        found = []
        for value in ids:
            # jsv.toString(): a JSON string keeps its quotes and is no number.
            text = json.dumps(value)
            if not re.fullmatch(r"-?\d+", text):
                raise ApiError(400, f"Bad file id: {text}.")
            datafile = self.datafiles.get(int(text))
            if datafile is None:
                raise ApiError(404, f"File with ID {text} not found.")
            found.append(datafile)
        owned = {fm.datafile.id for v in ds.versions for fm in v.files}
        if not all(df.id in owned for df in found):
            raise ApiError(400, "Not all files belong to dataset")
        return found

    def set_embargo(self, request, dsid):
        user, ds = self._embargo_caller(request, dsid)
        if not ds.latest.terms_valid():
            raise ApiError(409, TOUA_INVALID)
        self._check_may_embargo(user, ds)
        today = self.clock.today()
        try:
            body = json.loads(request.get_data() or b"")
            text = body["dateAvailable"]
            if not isinstance(text, str) or not ISO_DATE.fullmatch(text):
                raise ValueError(text)
            date_available = dt.date.fromisoformat(text)
        except (ValueError, KeyError, TypeError):
            # LocalDate.parse / getString throw; the API's generic handler answers.
            return internal_error()
        if not date_available > today:
            raise ApiError(400, "Date available can not be in the past")
        months = self.max_embargo_months()
        if months != -1 and date_available > add_months(today, months):
            raise ApiError(400, f"Date available can not exceed {MAX_DURATION[1:]}: {months}")
        reason = body.get("reason")
        if not isinstance(reason, str):  # json.getString("reason"): an NPE when missing
            return internal_error()
        ids = body.get("fileIds", [])
        if not isinstance(ids, list):
            return internal_error()
        files = self._embargo_files(ds, ids)
        refused = [df.id for df in files if df.released and not self.is_super(user)]
        if refused:
            raise ApiError(403, "You do not have permission to embargo the following files",
                           files=refused)
        embargo = Embargo(date_available, reason)
        for df in files:
            df.embargo = embargo
        return ok_message("Files were embargoed")

    def unset_embargo(self, request, dsid):
        user, ds = self._embargo_caller(request, dsid)
        self._check_may_embargo(user, ds)
        try:
            body = json.loads(request.get_data() or b"")
            ids = body.get("fileIds", [])
            if not isinstance(ids, list):
                raise TypeError(ids)
        except (ValueError, AttributeError, TypeError):
            return internal_error()
        files = self._embargo_files(ds, ids)
        refused = [df.id for df in files
                   if df.embargo is None or (df.released and not self.is_super(user))]
        if refused:
            raise ApiError(403, "The following files do not have embargoes or you do not "
                                "have permission to remove their embargoes", files=refused)
        for df in files:
            df.embargo = None
        return ok_message("Embargo(es) were removed from files")

    # -- hooks for listings and downloads -------------------------------------------------
    def embargo_field(self, datafile) -> dict:
        """``dataFile.embargo`` of a listing; absent without one (NullSafeJsonBuilder)."""
        if datafile.embargo is None:
            return {}
        return {"embargo": datafile.embargo.json()}

    def under_embargo(self, datafile) -> bool:
        return actively_embargoed(datafile, self.clock.today())


RULES = [
    Rule("/api/datasets/<dsid>/files/actions/:set-embargo", endpoint="set_embargo",
         methods=["POST"]),
    Rule("/api/datasets/<dsid>/files/actions/:unset-embargo", endpoint="unset_embargo",
         methods=["POST"]),
    Rule(f"/api/info/settings/{MAX_DURATION}", endpoint="info_max_embargo", methods=["GET"]),
    Rule("/api/admin/sandbox/clock", endpoint="clock_view", methods=["GET"]),
    Rule("/api/admin/sandbox/clock", endpoint="clock_put", methods=["PUT"]),
    Rule("/api/admin/settings/<name>", endpoint="admin_setting_put", methods=["PUT"]),
    Rule("/api/admin/settings/<name>", endpoint="admin_setting_delete", methods=["DELETE"]),
]
