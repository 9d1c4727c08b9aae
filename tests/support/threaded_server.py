"""An ASGI app served by uvicorn in a thread on a free loopback port (HTTPS when given a certificate)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


class ThreadedServer:
    def __init__(
        self,
        app: Any,
        cert: Path | None = None,
        key: Path | None = None,
        lifespan: str = "auto",
        http: Any = "auto",
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan=lifespan,  # type: ignore[arg-type]
            timeout_graceful_shutdown=1,
            http=http,
            ssl_certfile=str(cert) if cert else None,
            ssl_keyfile=str(key) if key else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self, within: float = 10) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + within
        while not self._server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(10)
