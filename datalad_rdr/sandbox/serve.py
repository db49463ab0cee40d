"""Serve a WSGI application on loopback in a background thread."""

from __future__ import annotations

import logging
import threading

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    # Werkzeug logs every request at INFO through the 'werkzeug' logger; keep the
    # sandbox's stdout clean (its first line is machine-readable JSON).
    def log_request(self, *args, **kwargs):  # noqa: D401
        logging.getLogger("datalad.rdr.sandbox.http").debug(
            "%s %s", self.command, self.path.split("?")[0]
        )


class ServedApp:
    """A threaded HTTP server for ``app`` on ``host:port`` (port 0 picks a free port)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.server = make_server(
            host, port, app, threaded=True, request_handler=_QuietHandler
        )
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=f"sandbox-{self.port}", daemon=True
        )

    def start(self) -> "ServedApp":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
