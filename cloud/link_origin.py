"""The origin of the links the cloud mails (verify, reset, a new address, an invitation).

A link in a mail must never take its origin from what the request that caused it says about
itself: a stranger asking for a reset of somebody else's password chooses its ``Host`` header,
and the mail would then lead its owner, with a working token, to the stranger's site (reset
poisoning).  The rule, in order:

1. ``MUMU_PUBLIC_URL`` when it is set (production sets it; the cloud warns at start-up when it
   sends real mail without it);
2. else the origin the request names, only if its host is a loopback name or address
   (``localhost``, ``127.0.0.0/8``, ``::1``): the demo, a test, a cloud tried on one machine.
   A link to the reader's own machine leads nowhere a stranger chose;
3. else the address the connection really reached, the server's own socket (``http://`` and
   the local address and port of the accepted connection), which no header changes: on a LAN
   without ``MUMU_PUBLIC_URL`` that is the address people use; behind a proxy it is the cloud's
   own port, which at worst does not open from elsewhere (set ``MUMU_PUBLIC_URL``).

Each link made counts in ``mumu_link_origins_total{source}``: ``public_url``, ``loopback``,
``own_address`` (a request named a host that is not trusted: a misconfigured proxy, or a
stranger trying).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request

    from cloud.services import Services


def _loopback(host: str) -> bool:
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authority(host: str, port: int | None, default: int) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port in (None, default) else f"{host}:{port}"


def link_origin(svc: Services, request: Request[Any, Any, Any]) -> str:
    """``scheme://host[:port]`` for a link in a mail, by the rule in the module's docs."""
    if svc.settings.public_url:
        svc.metrics.link_origins.labels("public_url").inc()
        return svc.settings.public_url
    url = request.url
    scheme = url.scheme if url.scheme in ("http", "https") else "http"
    host = url.hostname or ""
    if host and _loopback(host):
        try:
            port = url.port
        except ValueError:
            port = None
        svc.metrics.link_origins.labels("loopback").inc()
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{_authority(host.lower(), port, default)}"
    server = request.scope.get("server")
    svc.metrics.link_origins.labels("own_address").inc()
    if isinstance(server, tuple | list) and len(server) == 2 and server[0]:
        port = server[1] if isinstance(server[1], int) else None
        return f"http://{_authority(str(server[0]), port, 80)}"
    return "http://127.0.0.1"
