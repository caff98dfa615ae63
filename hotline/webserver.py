"""The web app's HTTP server: waitress for plain HTTP, cheroot (CherryPy's WSGI server, with
its builtin ssl adapter) when web.tls is on, since waitress has no TLS. Both serve the app on
a few threads; the desks' long-lived push streams stay on the push server (agent_desk.push).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from waitress.server import create_server

from core import tls
from core.config import Settings
from core.errors import HotlineError
from hotline.web import stop_web_server

THREADS = 4
log = logging.getLogger(__name__)


class WebServer:
    """The app listening on web.host:web.port, served from a thread of its own."""

    def __init__(self, app: Any, settings: Settings, *, host: str | None = None,
                 port: int | None = None, threads: int = THREADS) -> None:
        self.host = host or settings.web.host
        self.port = port or settings.web.port
        files = tls.certificate_files(settings)
        context = tls.server_context(settings)
        self.scheme = "http" if files is None else "https"
        self._thread: threading.Thread | None = None
        try:
            if files is None or context is None:
                self._waitress: Any = create_server(app, host=self.host, port=self.port,
                                                    threads=threads)
                self._cheroot: wsgi.Server | None = None
            else:
                self._waitress = None
                self._cheroot = wsgi.Server((self.host, self.port), app, numthreads=threads,
                                            server_name=self.host)
                adapter = BuiltinSSLAdapter(str(files[0]), str(files[1]))
                adapter.context = context  # TLS 1.2 at least, as core.tls sets it
                self._cheroot.ssl_adapter = adapter
                self._cheroot.error_log = _error_log  # to logging, not stderr
                self._cheroot.prepare()  # binds now: a taken port is said at start
        except OSError as exc:
            raise HotlineError(f"web: cannot listen on {self.host}:{self.port} (web.port): "
                               f"{exc.strerror}") from None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> WebServer:
        run = self._waitress.run if self._waitress is not None else self._cheroot_serve
        self._thread = threading.Thread(target=run, daemon=True, name="web")
        self._thread.start()
        return self

    def _cheroot_serve(self) -> None:
        assert self._cheroot is not None
        self._cheroot.serve()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._waitress is not None:
            stop_web_server(self._waitress, self._thread)
        elif self._cheroot is not None:
            self._cheroot.stop()
            self._thread.join(5)
        self._thread = None


def _error_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's errors into the log; a client that drops the handshake (a health probe's
    bare connect, a scanner, plain http) is routine: debug."""
    routine = "during handshake" in msg or "plain HTTP" in msg
    log.log(logging.DEBUG if routine else level, "web: %s", msg, exc_info=traceback)
