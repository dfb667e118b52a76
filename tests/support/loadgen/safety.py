"""Target validation: the load generator may only ever talk to loopback addresses.

Every target is parsed and resolved *before* any socket is created. The resolved
socket addresses are then the only addresses the client ever connects to (no
re-resolution later), so a DNS answer cannot change between check and use.
"""

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

ALLOWED_SCHEMES = ("http", "https")
DEFAULT_PORTS = {"http": 80, "https": 443}


class UnsafeTargetError(ValueError):
    """Raised when a URL points (or may point) anywhere other than loopback."""


@dataclass(frozen=True)
class Target:
    """A parsed and validated load target.

    ``sockaddrs`` holds ``(family, sockaddr)`` pairs that passed the loopback
    check; the client connects to these and nothing else.
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    sockaddrs: tuple

    @property
    def is_tls(self):
        """True for ``https`` targets."""
        return self.scheme == "https"

    @property
    def host_header(self):
        """Default ``Host`` header value (port omitted when it is the scheme default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == DEFAULT_PORTS[self.scheme]:
            return host
        return f"{host}:{self.port}"


def is_loopback_ip(address):
    """Return True if ``address`` (str) is in 127.0.0.0/8 or is ``::1``.

    IPv6 zone ids (``::1%lo``) are ignored. Anything unparsable is not loopback.
    """
    text = str(address).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if ip.version == 4:
        return ip in ipaddress.ip_network("127.0.0.0/8")
    return ip == ipaddress.IPv6Address("::1")


def resolve_loopback(host, port):
    """Resolve ``host`` and return its socket addresses, refusing any non-loopback result.

    All addresses the name resolves to must be loopback: a name that resolves to
    loopback *and* elsewhere is refused too. Raises :class:`UnsafeTargetError`.
    """
    if not host:
        raise UnsafeTargetError("refusing target: empty host")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeTargetError(f"refusing target: cannot resolve host {host!r}: {exc}") from exc
    if not infos:
        raise UnsafeTargetError(f"refusing target: host {host!r} resolved to no address")
    sockaddrs = []
    bad = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6) or not is_loopback_ip(sockaddr[0]):
            bad.append(str(sockaddr[0]))
            continue
        if (family, sockaddr) not in sockaddrs:
            sockaddrs.append((family, sockaddr))
    if bad:
        raise UnsafeTargetError(
            f"refusing target: host {host!r} resolves to non-loopback address(es) {', '.join(sorted(set(bad)))}; "
            "the load generator may only target 127.0.0.0/8, ::1 or localhost"
        )
    return tuple(sockaddrs)


def parse_target(url):
    """Parse ``url`` and validate that it is an http(s) URL on a loopback host.

    Returns a :class:`Target`. Raises :class:`UnsafeTargetError` (a ``ValueError``)
    for unsupported URLs and for any host that is not loopback.
    """
    if not isinstance(url, str) or not url:
        raise UnsafeTargetError("refusing target: URL must be a non-empty string")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeTargetError(f"refusing target {url!r}: scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise UnsafeTargetError(f"refusing target {url!r}: credentials in URL are not supported")
    host = parts.hostname
    if not host:
        raise UnsafeTargetError(f"refusing target {url!r}: no host")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise UnsafeTargetError(f"refusing target {url!r}: bad port: {exc}") from exc
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    sockaddrs = resolve_loopback(host, port)
    return Target(url=url, scheme=scheme, host=host, port=port, path=path, sockaddrs=sockaddrs)


def assert_loopback_sockaddr(sockaddr):
    """Last-line guard used right before ``connect()``: raise unless ``sockaddr`` is loopback."""
    if not is_loopback_ip(sockaddr[0]):
        raise UnsafeTargetError(f"refusing to connect to non-loopback address {sockaddr[0]!r}")
