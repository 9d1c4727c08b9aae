"""A server's socket, bound before anything says where it listens, and served with its bounds.

uvicorn binds only once the application has started, so a taken port would be reported after a
"listening on" line, in a log line of its own and with exit code 3. Binding first turns that into
one clear error, before anything starts.

Connections are bounded: on the connection that reaches ``MAX_CONNECTIONS``, a request gets 503 at once; the
process's limit of open files is raised as far as the system lets it. Clients that hold
connections open (a body sent a byte now and then) would otherwise take every descriptor the
process may open, and the server could neither answer nor reach its database.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 2048  # uvicorn's
MAX_CONNECTIONS = 1000  # at once, per process; each costs a descriptor and some memory
WANTED_OPEN_FILES = 8192  # the connections, the database's files and a margin


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


def url_of(scheme: str, host: str, sock: socket.socket) -> str:
    """Where clients reach a bound socket: its real port (``--port 0`` lets the system choose one),
    an IPv6 address in brackets, as URLs write it."""
    port = sock.getsockname()[1]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


# On SIGTERM, requests under way get this long to finish: a client that holds a request open
# without sending would otherwise hold the process until it goes (a supervisor then kills it).
GRACEFUL_SHUTDOWN_SECONDS = 20


def serve(app: Any, sock: socket.socket, **options: Any) -> bool:
    """Serve ``app`` with uvicorn on ``sock`` until interrupted; False when it could not start
    (the application's startup failed)."""
    server = bounded_server(app, **options)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # the signal uvicorn re-raises once it has shut down
        pass
    finally:
        sock.close()
    return server.started


def bounded_server(app: Any, **options: Any) -> uvicorn.Server:
    """A uvicorn server of ``app`` with this module's bounds (and those of ``http_limits``)."""
    import uvicorn

    from sessionexport.http_limits import BoundedHttpToolsProtocol

    raise_open_files_limit()
    config = uvicorn.Config(
        app,
        http=BoundedHttpToolsProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,
        **options,
    )
    return uvicorn.Server(config)


def raise_open_files_limit() -> None:
    """Raise the soft limit of open files towards ``WANTED_OPEN_FILES`` (as far as the hard limit
    allows): a common default of 1024 is less than the connections a server takes at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(WANTED_OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:  # a container may refuse it: serve within what there is
            log.warning("cannot raise the limit of open files from %d to %d: %s", soft, wanted, exc)
