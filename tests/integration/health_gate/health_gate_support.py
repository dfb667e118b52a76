"""Real loopback servers and helpers for the health_gate integration tests.

Everything binds to 127.0.0.1 on a free port; every server/process is stopped by the
fixture that started it (conftest.py), also when a test fails.
"""

import datetime
import http.server
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
VENV_BIN = os.path.join(REPO, '.venv', 'bin')
NODE_BIN = os.path.join(REPO, '.cache', 'node', 'bin')
COLLECTIONS = os.path.join(REPO, '.cache', 'collections')


def run_command(args, environ_update=None, data=None, binary_data=False, **kwargs):  # pylint: disable=unused-argument
    """Stand-in for AnsibleModule.run_command outside a module (tests, benchmark)."""
    env = dict(os.environ)
    env.update(environ_update or {})
    if isinstance(data, str):
        data = data.encode()
    proc = subprocess.run(args, env=env, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False, timeout=120)
    return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, step=0.02, what='condition'):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except Exception:  # pylint: disable=broad-except
            pass
        time.sleep(step)
    raise AssertionError('timed out after %.1fs waiting for %s' % (timeout, what))


# ----------------------------------------------------------------------------- scripted HTTP(S) server


class Reply:
    """What the server does for one request."""

    def __init__(self, status=200, body=b'ok', delay=0.0, drop=False, headers=None, content_type='text/plain'):
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, (dict, list)) else (body.encode() if isinstance(body, str) else body)
        self.delay = delay
        self.drop = drop
        self.headers = headers or {}
        self.content_type = 'application/json' if isinstance(body, (dict, list)) else content_type


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args):  # keep test output clean
        pass

    def _serve(self):
        server = self.server
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        with server.lock:
            server.requests.append({'method': self.command, 'path': self.path, 'headers': dict(self.headers.items()),
                                    'body': body, 'client': self.client_address, 'time': time.monotonic()})
            reply = server.next_reply()
        if reply.delay:
            time.sleep(reply.delay)
        if reply.drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.send_response(reply.status)
        self.send_header('Content-Type', reply.content_type)
        self.send_header('Content-Length', str(len(reply.body)))
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(reply.body)

    do_GET = do_POST = do_HEAD = do_PUT = _serve


class ScriptedHTTPServer(http.server.ThreadingHTTPServer):
    """Threaded HTTP(S) server on 127.0.0.1 whose replies follow a script (then repeat its last entry or cycle)."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 overflows under bursts of probe connections (SYN retransmit after 1 s)

    def __init__(self, tls=None):
        super().__init__(('127.0.0.1', 0), _Handler)
        self.lock = threading.Lock()
        self.requests = []
        self.script = [Reply()]
        self.cycle = False
        self.position = 0
        self.tls = tls
        self._thread = None

    @property
    def port(self):
        return self.server_address[1]

    def url(self, path='/health', userinfo=''):
        scheme = 'https' if self.tls else 'http'
        return '%s://%s127.0.0.1:%d%s' % (scheme, userinfo + '@' if userinfo else '', self.port, path)

    def set_script(self, replies, cycle=False):
        with self.lock:
            self.script = list(replies)
            self.cycle = cycle
            self.position = 0
            self.requests = []

    def next_reply(self):
        if self.position < len(self.script):
            reply = self.script[self.position]
        elif self.cycle:
            reply = self.script[self.position % len(self.script)]
        else:
            reply = self.script[-1]
        self.position += 1
        return reply

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            sock.settimeout(5)
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, addr

    def handle_error(self, request, client_address):  # TLS handshake failures are expected in some tests
        pass

    def start(self):
        self._thread = threading.Thread(target=self.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(5)


def server_tls_context(certfile, keyfile, max_version=None, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile, keyfile)
    if max_version:
        ctx.maximum_version = max_version
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


# ----------------------------------------------------------------------------- certificates


class Pki:
    """A test CA in a directory, issuing leaf certificates with chosen validity."""

    def __init__(self, directory):
        self.dir = str(directory)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'nodeops test CA')])
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.ca_path = self._write('ca.pem', self.cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, name, data):
        path = os.path.join(self.dir, name)
        with open(path, 'wb') as handle:
            handle.write(data)
        return path

    def issue(self, name, days_valid=30, days_ago=1, dns=('localhost', 'api.test'), self_signed=False, client=False):
        """Write NAME.pem/NAME.key, valid from days_ago days ago for days_valid more days (negative: expired)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])])
        issuer_name, issuer_key = (subject, key) if self_signed else (self.cert.subject, self.key)
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]
        usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=days_ago))
                .not_valid_after(now + datetime.timedelta(days=days_valid))
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
                .sign(issuer_key, hashes.SHA256()))
        certfile = self._write(name + '.pem', cert.public_bytes(serialization.Encoding.PEM))
        keyfile = self._write(name + '.key', key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                               serialization.NoEncryption()))
        return certfile, keyfile


# ----------------------------------------------------------------------------- processes


class Proc:
    """A child process stopped (TERM, then KILL) by stop()."""

    def __init__(self, args, env=None, cwd=None):
        self.args = args
        self.popen = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stop(self):
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.popen.stdout:
            self.popen.stdout.close()


def start_redis(tmpdir, password):
    port = free_port()
    proc = Proc([shutil.which('redis-server') or 'redis-server', '--port', str(port), '--bind', '127.0.0.1',
                 '--save', '', '--appendonly', 'no', '--requirepass', password, '--dir', str(tmpdir)])

    def up():
        with socket.create_connection(('127.0.0.1', port), timeout=0.5) as sock:
            sock.sendall(b'PING\r\n')
            return sock.recv(64).startswith((b'+PONG', b'-NOAUTH'))
    try:
        wait_for(up, what='redis-server on port %d' % port)
    except AssertionError:
        proc.stop()
        raise
    return proc, port


def _drain(stream):
    for _line in iter(stream.readline, b''):
        pass


def start_mongo_test_server(replset=None):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, 'tests', 'support'), PYTHONUNBUFFERED='1')
    args = [os.path.join(VENV_BIN, 'python'), '-m', 'mongo_test_server', '--host', '127.0.0.1', '--port', '0']
    proc = Proc(args + (['--replset', replset] if replset else []), env=env)
    line = b''
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            line = proc.popen.stdout.readline()
            if not line and proc.popen.poll() is not None:
                break
            if b'listening on' in line:
                hostport = line.decode().strip().rsplit(' ', 1)[-1]
                host, port = hostport.rsplit(':', 1)
                threading.Thread(target=_drain, args=(proc.popen.stdout,), daemon=True).start()  # keep its log pipe flowing
                return proc, host, int(port)
        raise AssertionError('mongo_test_server did not print "listening on HOST:PORT" (last line %r, rc %r)'
                             % (line, proc.popen.poll()))
    except BaseException:
        proc.stop()
        raise


class Pm2:
    """PM2 with a private PM2_HOME; kill() stops the daemon and everything it runs."""

    def __init__(self, home):
        self.home = str(home)
        self.binary = os.path.join(NODE_BIN, 'pm2')
        self.env = dict(os.environ, PM2_HOME=self.home, PATH=NODE_BIN + os.pathsep + os.environ.get('PATH', ''))

    def __call__(self, *args, check=True, timeout=60):
        proc = subprocess.run([self.binary] + list(args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError('pm2 %s failed (%s): %s' % (' '.join(args), proc.returncode, proc.stdout.decode()[-2000:]))
        return proc.stdout.decode()

    def jlist(self):
        out = self('jlist')
        return json.loads(out[out.index('['):])

    def kill(self):
        if os.path.exists(os.path.join(self.home, 'pm2.pid')):
            self('kill', check=False)
