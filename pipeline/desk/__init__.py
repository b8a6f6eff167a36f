"""`pipeline desk`: the editor's desk and the readers' one-click unsubscribe, one small web app.

Starlette (web.py) served by uvicorn on one socket this module opens (127.0.0.1 unless told
otherwise: TLS and the public name are the reverse proxy's job, see deploy/). What protects it
is in security.py; every page asks `Pipeline` and nothing below it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TextIO

from pipeline.desk.security import desk_token
from pipeline.desk.web import DeskSettings, PipelineThread, make_app
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.app import Pipeline
    from pipeline.deliver import UnsubscribeRoute

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
# The desk's own paths: the unsubscribe path of delivery.unsubscribe_url must be none of them.
OWN_PATHS = ("/", "/connexion", "/deconnexion", "/sante")
OWN_PREFIXES = ("/static/", "/brouillon/")


def desk_settings(pipeline: PipelineThread, env: Mapping[str, str]) -> DeskSettings:
    """What the desk needs before it listens; each problem is one line (PipelineError)."""
    token = desk_token(env)

    def read(app: Pipeline) -> tuple[str, UnsubscribeRoute | None]:
        route = app.unsubscribe_route(env) if app.config.delivery is not None else None
        return app.config.newsletter.name, route

    name, route = pipeline.run(read)
    if route is not None:
        path = route.path
        if (not re.fullmatch(r"/[A-Za-z0-9._~/-]*", path) or path in OWN_PATHS
                or any(path.startswith(p) for p in OWN_PREFIXES)):
            raise PipelineError(f"delivery.unsubscribe_url: the desk cannot serve the path {path!r} (it must be "
                                f"plain letters, digits and / . _ ~ -, and none of {', '.join(OWN_PATHS)}, "
                                f"{', '.join(p + '…' for p in OWN_PREFIXES)})")
    return DeskSettings(token=token, name=name, unsubscribe=route)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); one line when it cannot."""
    if not 0 <= port <= 65535:
        raise PipelineError(f"invalid port {port}: must be between 0 and 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PipelineError(f"cannot listen on {host}:{port}: {reason}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PipelineError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def serve_desk(open_pipeline: Callable[[], Pipeline], host: str, port: int, out: TextIO, log: TextIO,
               env: Mapping[str, str] | None = None) -> None:
    """Serve the desk until SIGINT or SIGTERM; prints its URL once the socket listens."""
    import uvicorn

    env = os.environ if env is None else env
    pipeline, readers = PipelineThread(open_pipeline), PipelineThread(open_pipeline)
    try:
        settings = desk_settings(pipeline, env)
        sock = listen(host, port)
        # proxy_headers: the client address and scheme come from X-Forwarded-For / -Proto, but only
        # when the connection comes from $FORWARDED_ALLOW_IPS (default 127.0.0.1: the local proxy).
        config = uvicorn.Config(make_app(pipeline, readers, settings, log), proxy_headers=True, access_log=False,
                                log_level="warning", server_header=False, lifespan="off")
        shown = f"[{host}]" if ":" in host else host
        print(f"desk of {settings.name} on http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", file=out,
              flush=True)
        if settings.unsubscribe is None:
            print("notice: no `delivery:` section: the readers' unsubscribe endpoint is off", file=log, flush=True)
        else:
            print(f"readers' unsubscribe: {settings.unsubscribe.path}?{settings.unsubscribe.email_param}=…&"
                  f"{settings.unsubscribe.token_param}=… (delivery.unsubscribe_url)", file=out, flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        pipeline.close()
        readers.close()


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "desk_settings", "listen", "make_app", "serve_desk"]
