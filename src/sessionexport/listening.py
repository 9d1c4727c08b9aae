"""A server's socket, bound before anything says where it listens.

uvicorn binds only once the application has started, so a taken port would be reported after a
"listening on" line, in a log line of its own and with exit code 3. Binding first turns that into
one clear error, before anything starts.
"""

from __future__ import annotations

import os
import socket
from typing import Any

LISTEN_BACKLOG = 2048  # uvicorn's


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as uvicorn binds one (IPv6 for an address with a colon, and
    then both stacks where the system does so: ``::`` takes IPv4 too); OSError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)  # connections made before the app starts wait, not refused
        return sock
    except socket.gaierror as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    except OSError as exc:
        sock.close()
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise OSError(f"cannot listen on {host}:{port}: {reason}") from None


# On SIGTERM, requests under way get this long to finish: a client that holds a request open
# without sending would otherwise hold the process until it goes (a supervisor then kills it).
GRACEFUL_SHUTDOWN_SECONDS = 20


def serve(app: Any, sock: socket.socket, **options: Any) -> bool:
    """Serve ``app`` with uvicorn on ``sock`` until interrupted; False when it could not start
    (the application's startup failed)."""
    import uvicorn

    from sessionexport.http_limits import BoundedHttpToolsProtocol

    config = uvicorn.Config(
        app,
        http=BoundedHttpToolsProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **options,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # the signal uvicorn re-raises once it has shut down
        pass
    finally:
        sock.close()
    return server.started
