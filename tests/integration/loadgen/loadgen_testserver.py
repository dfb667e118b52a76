"""Tiny scripted HTTP/1.1 server for the load generator tests.

Threaded, loopback only, one thread per connection. A ``behaviour`` callable
decides per request what to do (respond, close silently, reset, hang, ...), so
tests can reproduce keep-alive races and broken upstreams deterministically.
Counts accepted connections and requests; :meth:`ScriptedServer.stop` closes
everything and joins the threads.
"""

import socket
import struct
import threading
from dataclasses import dataclass, field

KEEP = object()


@dataclass
class Request:
    """A parsed request as seen by the server."""

    index: int
    conn_index: int
    conn_request: int
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class Respond:
    """Send a response. ``version=KEEP`` uses the server's current version (None: no version header)."""

    status: int = 200
    body: bytes = b"ok\n"
    headers: dict = field(default_factory=dict)
    close: bool = False
    chunked: bool = False
    no_length: bool = False
    version: object = KEEP


@dataclass
class Close:
    """Close the connection (FIN) without sending anything."""


@dataclass
class Reset:
    """Optionally send ``partial`` bytes, then abort the connection with a TCP RST."""

    partial: bytes = b""
    delay: float = 0.05


@dataclass
class Hang:
    """Never answer (until the server stops)."""


def ok_behaviour(_request):
    """Default behaviour: 200 with the server's version header."""
    return Respond()


class ScriptedServer:
    """Loopback HTTP server driven by a behaviour callable ``behaviour(Request) -> action``."""

    def __init__(self, behaviour=ok_behaviour, host="127.0.0.1", ssl_context=None, idle_timeout=None, version="v1"):
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self.version = version
        self.connections = 0
        self.requests = 0
        self.seen = []
        self.sni_names = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._socks = set()
        self._threads = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, 0))
        self.listener.listen(256)
        self.listener.settimeout(0.05)
        self.host, self.port = self.listener.getsockname()[:2]
        if ssl_context is not None:
            ssl_context.sni_callback = self._record_sni

    def url(self, path="/", scheme=None, host=None):
        """URL of this server."""
        scheme = scheme or ("https" if self.ssl_context else "http")
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def start(self):
        """Start accepting in a background thread."""
        thread = threading.Thread(target=self._accept_loop, name="scripted-accept", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self

    def stop(self):
        """Stop accepting, abort every open connection, join all threads."""
        self._stopped.set()
        for sock in list(self._socks):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(5)
        self.listener.close()

    # -- internals ------------------------------------------------------------

    def _record_sni(self, _sslobj, server_name, _context):
        with self._lock:
            self.sni_names.append(server_name)

    def _accept_loop(self):
        while not self._stopped.is_set():
            try:
                sock, _addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                conn_index = self.connections
                self.connections += 1
                self._socks.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock, conn_index), name=f"scripted-conn-{conn_index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock, conn_index):
        try:
            sock.settimeout(10)
            if self.ssl_context is not None:
                tls = self.ssl_context.wrap_socket(sock, server_side=True)
                with self._lock:
                    self._socks.discard(sock)
                    self._socks.add(tls)
                sock = tls
            self._serve_requests(sock, conn_index)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._socks.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _serve_requests(self, sock, conn_index):
        buf = b""
        conn_request = 0
        while not self._stopped.is_set():
            sock.settimeout(self.idle_timeout if (self.idle_timeout and not buf) else 10)
            while b"\r\n\r\n" not in buf:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return  # idle keep-alive timeout: close silently, like a server's keepalive_timeout
                if not data:
                    return
                buf += data
                sock.settimeout(10)
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _proto = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _sep, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(buf) < length:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            with self._lock:
                request = Request(self.requests, conn_index, conn_request, method, path, headers, body)
                self.requests += 1
                self.seen.append(request)
            conn_request += 1
            action = self.behaviour(request)
            if not self._act(sock, action, request):
                return

    def _act(self, sock, action, request):
        """Perform ``action``; return False when the connection must be closed."""
        if isinstance(action, Close):
            return False
        if isinstance(action, Reset):
            if action.partial:
                sock.sendall(action.partial)
                self._stopped.wait(action.delay)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return False
        if isinstance(action, Hang):
            self._stopped.wait(30)
            return False
        version = self.version if action.version is KEEP else action.version
        lines = [f"HTTP/1.1 {action.status} X"]
        if version is not None:
            lines.append(f"X-App-Version: {version}")
        lines.extend(f"{name}: {value}" for name, value in action.headers.items())
        close = action.close or action.no_length or request.headers.get("connection", "").lower() == "close"
        if action.close:
            lines.append("Connection: close")
        if action.chunked:
            lines.append("Transfer-Encoding: chunked")
            middle = len(action.body) // 2
            payload = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(part), part) for part in (action.body[:middle], action.body[middle:]) if part)
            payload += b"0\r\nX-Trailer: t\r\n\r\n"
        elif action.no_length:
            payload = action.body
        else:
            lines.append(f"Content-Length: {len(action.body)}")
            payload = action.body
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        return not close
