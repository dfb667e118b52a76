"""Minimal HTTP/1.1 client on raw (optionally TLS-wrapped) sockets.

Written by hand instead of using ``http.client`` because the retry rule needs to
know exactly whether *any* response byte arrived before a connection failed,
and because keep-alive reuse must be explicit and observable.
"""

import select
import socket
import ssl
import time
from dataclasses import dataclass

from .safety import assert_loopback_sockaddr

MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 8 * 1024
RECV_SIZE = 65536
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_EOF_SSL_ERRORS = (ssl.SSLZeroReturnError, ssl.SSLEOFError)


class AttemptError(Exception):
    """One failed attempt of a request.

    ``kind`` is one of connect_error, tls, timeout, reset, bad_response.
    ``response_started`` tells whether any response byte had arrived; ``phase``
    is ``connect`` (incl. TLS handshake), ``send`` or ``recv``.
    """

    def __init__(self, kind, message, phase, response_started=False):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.phase = phase
        self.response_started = response_started

    @property
    def is_keepalive_race(self):
        """True if this failure looks like the keep-alive close race (peer closed before any response byte)."""
        return self.kind == "reset" and self.phase in ("send", "recv") and not self.response_started


@dataclass(slots=True)
class Response:
    """What the load generator needs from a response: status, version header, and connection reusability."""

    status: int
    version: str | None
    keep_alive: bool


class Connection:
    """A connected socket plus its receive buffer; ``requests`` counts completed exchanges."""

    __slots__ = ("sock", "buf", "requests")

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.requests = 0

    def close(self):
        """Close the socket, ignoring errors."""
        try:
            self.sock.close()
        except OSError:
            pass


def build_ssl_context(insecure=False, cafile=None):
    """Client TLS context: verify against ``cafile`` (or system CAs) unless ``insecure``."""
    context = ssl.create_default_context(cafile=cafile)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def _remaining(deadline, phase, started=False):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise AttemptError("timeout", f"request timed out ({phase})", phase, started)
    return remaining


class HttpClient:
    """Sends one pre-built request over :class:`Connection` objects (thread-safe: no mutable state)."""

    def __init__(self, target, request_bytes, method, keepalive, version_header, ssl_context=None, server_hostname=None):
        self.target = target
        self.request_bytes = request_bytes
        self.method = method
        self.keepalive = keepalive
        self.version_header = version_header.lower().encode("latin-1") if version_header else None
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname

    # -- connection setup -------------------------------------------------

    def connect(self, deadline):
        """Open a fresh connection to the first validated loopback address that accepts."""
        last_error = "no address"
        sock = None
        for family, sockaddr in self.target.sockaddrs:
            assert_loopback_sockaddr(sockaddr)
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(_remaining(deadline, "connect"))
                sock.connect(sockaddr)
                break
            except AttemptError:
                sock.close()
                raise AttemptError("connect_error", "connect timed out", "connect") from None
            except TimeoutError:
                sock.close()
                last_error = f"connect to {sockaddr[0]}:{sockaddr[1]} timed out"
            except OSError as exc:
                sock.close()
                last_error = f"connect to {sockaddr[0]}:{sockaddr[1]} failed: {exc.strerror or exc}"
            sock = None
        if sock is None:
            raise AttemptError("connect_error", last_error, "connect")
        if self.ssl_context is not None:
            sock = self._handshake(sock, deadline)
        return Connection(sock)

    def _handshake(self, sock, deadline):
        try:
            sock.settimeout(_remaining(deadline, "tls handshake"))
            return self.ssl_context.wrap_socket(sock, server_hostname=self.server_hostname)
        except TimeoutError:
            sock.close()
            raise AttemptError("timeout", "TLS handshake timed out", "connect") from None
        except ssl.SSLError as exc:
            sock.close()
            raise AttemptError("tls", f"TLS handshake failed: {exc}", "connect") from None
        except OSError as exc:
            sock.close()
            raise AttemptError("connect_error", f"TLS handshake failed: {exc.strerror or exc}", "connect") from None
        except AttemptError:
            sock.close()
            raise

    # -- one exchange -----------------------------------------------------

    @staticmethod
    def peer_closed(conn):
        """True if an idle keep-alive connection is no longer usable (the peer closed it or sent something unasked).

        Pooled HTTP clients (urllib3, Go's transport, browsers) make this check before reusing a
        connection, so a server closing idle connections (keepalive_timeout, an nginx reload's old
        worker) costs a reconnect, not a lost request. Nothing has been sent yet, so it is no retry.
        """
        if conn.buf:
            return True
        try:
            if isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                return True
            readable = select.select([conn.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return True
        return bool(readable)

    def exchange(self, conn, deadline):
        """Send the request on ``conn`` and read one full response. Raises :class:`AttemptError`."""
        try:
            conn.sock.settimeout(_remaining(deadline, "send"))
            conn.sock.sendall(self.request_bytes)
        except TimeoutError:
            raise AttemptError("timeout", "request timed out (send)", "send") from None
        except OSError as exc:
            raise AttemptError("reset", f"send failed: {_describe(exc)}", "send") from None
        status, http10, headers = self._read_head(conn, deadline)
        while 100 <= status < 200:
            if status == 101:
                raise AttemptError("bad_response", "unexpected 101 Switching Protocols", "recv", True)
            status, http10, headers = self._read_head(conn, deadline)
        delimited = self._read_body(conn, deadline, status, headers)
        tokens = {token.strip() for token in headers.get(b"connection", b"").lower().split(b",")}
        if http10:
            keep_alive = b"keep-alive" in tokens
        else:
            keep_alive = b"close" not in tokens
        version = None
        if self.version_header is not None:
            raw = headers.get(self.version_header)
            if raw is not None:
                version = raw.decode("latin-1")
        conn.requests += 1
        return Response(status=status, version=version, keep_alive=keep_alive and delimited and self.keepalive)

    # -- reading helpers --------------------------------------------------

    def _fill(self, conn, deadline, started, eof_ok=False):
        """Receive more bytes into ``conn.buf``; return False on EOF (raise unless ``eof_ok``)."""
        try:
            conn.sock.settimeout(_remaining(deadline, "recv", started))
            data = conn.sock.recv(RECV_SIZE)
        except TimeoutError:
            raise AttemptError("timeout", "request timed out (recv)", "recv", started) from None
        except _EOF_SSL_ERRORS:
            data = b""
        except OSError as exc:
            raise AttemptError("reset", f"recv failed: {_describe(exc)}", "recv", started) from None
        if not data:
            if eof_ok:
                return False
            message = "connection closed mid-response" if started else "connection closed before any response byte"
            raise AttemptError("reset", message, "recv", started)
        conn.buf += data
        return True

    def _read_head(self, conn, deadline):
        buf = conn.buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(buf) > MAX_HEAD_BYTES:
                raise AttemptError("bad_response", "response head too large", "recv", True)
            self._fill(conn, deadline, started=bool(buf))
        head = bytes(buf[:end])
        del buf[:end + 4]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise AttemptError("bad_response", f"bad status line {lines[0][:80]!r}", "recv", True)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise AttemptError("bad_response", f"bad header line {line[:80]!r}", "recv", True)
            key = name.lower()
            value = value.strip()
            headers[key] = headers[key] + b", " + value if key in headers else value
        return int(parts[1]), parts[0] == b"HTTP/1.0", headers

    def _read_body(self, conn, deadline, status, headers):
        """Consume the body; return True if it was length-delimited (connection reusable)."""
        if self.method == "HEAD" or status in (204, 304):
            return True
        transfer_encoding = headers.get(b"transfer-encoding")
        if transfer_encoding is not None:
            if transfer_encoding.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
                self._read_chunked(conn, deadline)
                return True
            self._read_until_close(conn, deadline)
            return False
        content_length = headers.get(b"content-length")
        if content_length is None:
            self._read_until_close(conn, deadline)
            return False
        values = {item.strip() for item in content_length.split(b",")}
        if len(values) != 1:
            raise AttemptError("bad_response", "conflicting Content-Length headers", "recv", True)
        value = values.pop()
        if not value.isdigit():
            raise AttemptError("bad_response", f"bad Content-Length {value[:40]!r}", "recv", True)
        self._skip(conn, int(value), deadline)
        return True

    def _skip(self, conn, length, deadline):
        while True:
            take = min(length, len(conn.buf))
            if take:
                del conn.buf[:take]
                length -= take
            if not length:
                return
            self._fill(conn, deadline, started=True)

    def _read_line(self, conn, deadline):
        while True:
            end = conn.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(conn.buf[:end])
                del conn.buf[:end + 2]
                return line
            if len(conn.buf) > MAX_LINE_BYTES:
                raise AttemptError("bad_response", "chunk line too long", "recv", True)
            self._fill(conn, deadline, started=True)

    def _read_chunked(self, conn, deadline):
        while True:
            size_text = self._read_line(conn, deadline).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise AttemptError("bad_response", f"bad chunk size {size_text[:40]!r}", "recv", True) from None
            if size < 0:
                raise AttemptError("bad_response", "negative chunk size", "recv", True)
            if size == 0:
                while self._read_line(conn, deadline):
                    pass
                return
            self._skip(conn, size, deadline)
            if self._read_line(conn, deadline):
                raise AttemptError("bad_response", "missing CRLF after chunk", "recv", True)

    def _read_until_close(self, conn, deadline):
        while True:
            conn.buf.clear()
            if not self._fill(conn, deadline, started=True, eof_ok=True):
                return


def build_request(method, path, host_header, headers=(), body=None, keepalive=True):
    """Serialise the request once; every attempt sends the same bytes.

    ``headers`` is a sequence of ``(name, value)``; a user ``Host`` or
    ``User-Agent`` header replaces the default one.
    """
    for name, value in headers:
        if any(ch in f"{name}{value}" for ch in "\r\n") or ":" in name or not name.strip():
            raise ValueError(f"invalid header {name!r}: {value!r}")
    if body is not None and isinstance(body, str):
        body = body.encode("utf-8")
    user_names = {name.strip().lower() for name, _value in headers}
    lines = [f"{method} {path} HTTP/1.1"]
    if "host" not in user_names:
        lines.append(f"Host: {host_header}")
    if "user-agent" not in user_names:
        lines.append("User-Agent: nodeops-loadgen/1")
    if "accept" not in user_names:
        lines.append("Accept: */*")
    lines.extend(f"{name.strip()}: {value.strip()}" for name, value in headers if name.strip().lower() not in ("content-length", "connection"))
    if body is not None or method in BODY_METHODS:
        lines.append(f"Content-Length: {len(body or b'')}")
    if not keepalive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _describe(exc):
    if isinstance(exc, ssl.SSLError):
        return str(exc)
    name = type(exc).__name__
    return f"{name}: {exc.strerror}" if getattr(exc, "strerror", None) else name
