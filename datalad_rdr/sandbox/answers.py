"""How the sandbox's Dataverse answers: the JSON envelope of a success and of an error."""

from __future__ import annotations

import json
import uuid

from werkzeug.wrappers import Response

TOUA_INVALID = ("Terms of Use and Access are invalid. You must enable request access or "
                "add terms of access in datasets with restricted files.")


class ApiError(Exception):
    """An error answer: ``{"status": "ERROR", "message": ...}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra

    def response(self) -> Response:
        body = {"status": "ERROR", "message": self.message, **self.extra}
        return Response(json.dumps(body), status=self.status, content_type="application/json")


def ok(data, status: int = 200, **extra) -> Response:
    body = {"status": "OK", **extra, "data": data}
    return Response(json.dumps(body), status=status, content_type="application/json")


def internal_error(status: int = 500) -> Response:
    """The API's generic handler for an uncaught exception (AbstractApiBean)."""
    return Response(json.dumps({
        "status": "ERROR", "code": status,
        "message": "Internal server error. More details available at the server logs.",
        "incidentId": str(uuid.uuid4())}), status=status, content_type="application/json")


def ok_message(message: str) -> Response:
    # 6.7.1 wraps string replies in an object (ref §2, "string success at 6.7.1").
    return ok({"message": message})
