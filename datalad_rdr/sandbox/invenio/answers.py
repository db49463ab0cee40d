"""How the sandbox's Zenodo answers: JSON, and errors as flask-resources shapes them."""

from __future__ import annotations

import json

from werkzeug.wrappers import Response


class ApiError(Exception):
    """An error answered as flask-resources does: ``{"status", "message", "errors"?}``."""

    def __init__(self, status: int, message: str, errors: list | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors

    def response(self) -> Response:
        body = {"status": self.status, "message": self.message}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(body, self.status)


def validation_error(errors: list) -> ApiError:
    return ApiError(400, "A validation error occurred.", errors)


def no_pid() -> ApiError:
    return ApiError(404, "The persistent identifier does not exist.")


def json_response(data, status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(json.dumps(data), status=status, mimetype=mimetype)
