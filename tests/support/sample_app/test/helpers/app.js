'use strict';
// Test helpers: spawn the real app as a child process on a free loopback
// port, talk HTTP to it (node:http and raw sockets), and always clean up.

const net = require('node:net');
const http = require('node:http');
const path = require('node:path');
const { spawn } = require('node:child_process');

const APP_DIR = path.resolve(__dirname, '..', '..');
const HOST = '127.0.0.1';

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new Error(`timeout after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// Listen on port 0 to let the kernel pick a free port, then release it.
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, HOST, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Clean env: nothing from the developer's shell (FAIL_HEALTH etc.) leaks in.
function baseEnv(extra = {}) {
  const env = { PATH: process.env.PATH, APP_ENV: 'lab' };
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined || v === null) delete env[k];
    else env[k] = String(v);
  }
  return env;
}

/**
 * Spawn `node <script> [args]` in `cwd` with `env` (used as is).
 * Returns a handle with captured output, parsed JSON log lines and helpers.
 */
function spawnApp({ script = 'server.js', args = [], env, cwd = APP_DIR, ipc = false } = {}) {
  const child = spawn(process.execPath, [script, ...args], {
    cwd,
    env,
    stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const h = {
    child,
    pid: child.pid,
    stdout: '',
    stderr: '',
    events: [], // parsed JSON log lines (stdout and stderr)
    messages: [], // IPC messages
    exitCode: undefined,
    signal: undefined,
    waiters: new Set(),
  };
  const onLine = (line) => {
    if (!line.startsWith('{')) return;
    try {
      const ev = JSON.parse(line);
      ev._at = Date.now();
      h.events.push(ev);
      for (const w of h.waiters) w();
    } catch {
      // not JSON
    }
  };
  for (const name of ['stdout', 'stderr']) {
    let partial = '';
    child[name].setEncoding('utf8');
    child[name].on('data', (d) => {
      h[name] += d;
      partial += d;
      let idx;
      while ((idx = partial.indexOf('\n')) !== -1) {
        onLine(partial.slice(0, idx));
        partial = partial.slice(idx + 1);
      }
    });
  }
  child.on('message', (m) => {
    h.messages.push({ msg: m, at: Date.now() });
    for (const w of h.waiters) w();
  });
  child.on('exit', () => {
    h.exitedAt = Date.now();
  });
  // 'close' (not 'exit'): fires once stdout/stderr are drained, so every log
  // line the process wrote is in h.events when this resolves.
  h.exited = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      h.exitCode = code;
      h.signal = signal;
      children.delete(child);
      resolve({ code, signal });
      for (const w of h.waiters) w();
    });
  });
  // Resolves when pred() is truthy; rejects if the process exits first.
  h.waitFor = (pred, what, ms = 10000) =>
    withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const v = pred();
          if (v) {
            h.waiters.delete(check);
            resolve(v);
          } else if (h.exitCode !== undefined) {
            h.waiters.delete(check);
            reject(new Error(`process exited (${h.exitCode}/${h.signal}) before ${what}; stderr: ${h.stderr.slice(-500)}`));
          }
        };
        h.waiters.add(check);
        check();
      }),
      ms,
      `${what}; stderr: ${h.stderr.slice(-300)}`,
    );
  h.waitForEvent = (event, ms = 10000) => h.waitFor(() => h.events.find((e) => e.event === event), `log event ${event}`, ms);
  h.waitExit = (ms = 10000) => withTimeout(h.exited, ms, 'process exit');
  h.kill = async (signal = 'SIGKILL') => {
    if (h.exitCode !== undefined) return;
    try {
      child.kill(signal);
    } catch {
      // gone
    }
    await withTimeout(h.exited, 5000, 'kill').catch(() => {});
  };
  return h;
}

/**
 * Start server.js on a free port and wait for its "ready" log line.
 * Retries with another port if the picked one was taken meanwhile.
 * Registers cleanup on the test context `t` when given.
 */
async function startServer(t, { env = {}, cwd, ipc = false, waitReady = true, script = 'server.js' } = {}) {
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const app = spawnApp({ script, cwd, ipc, env: baseEnv({ PORT: port, ...env }) });
    if (t) t.after(() => app.kill());
    app.port = port;
    if (!waitReady) return app;
    try {
      await app.waitForEvent('ready', 10000);
      return app;
    } catch (err) {
      if (attempt < 5 && /EADDRINUSE/.test(app.stderr)) continue;
      throw err;
    }
  }
}

/** One HTTP request on a fresh connection (agent: false) unless `agent` given. */
function request(port, { method = 'GET', path: p = '/', headers = {}, body, agent = false, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, method, path: p, headers, agent, timeout }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`request ${p} timed out`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Resolves to true if a TCP connection to the port is accepted. */
function canConnect(port, ms = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(ms, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

/**
 * Raw HTTP/1.1 connection for keep-alive tests: send bytes, read one
 * response (Content-Length framed), observe when the server closes.
 */
class RawConn {
  constructor(port) {
    this.buf = Buffer.alloc(0);
    this.waiters = [];
    this.ended = false;
    this.sock = net.connect({ host: HOST, port });
    this.connected = new Promise((resolve, reject) => {
      this.sock.once('connect', resolve);
      this.sock.once('error', reject);
    });
    this.closed = new Promise((resolve) => {
      this.sock.on('close', () => {
        this.ended = true;
        this.closedAt = Date.now();
        resolve();
        this.wake();
      });
    });
    this.sock.on('error', () => {});
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  send(text) {
    this.sock.write(text);
  }

  get(p, extraHeaders = '') {
    this.send(`GET ${p} HTTP/1.1\r\nHost: ${HOST}\r\nConnection: keep-alive\r\n${extraHeaders}\r\n`);
  }

  tryParse() {
    const end = this.buf.indexOf('\r\n\r\n');
    if (end === -1) return null;
    const head = this.buf.subarray(0, end).toString('latin1').split('\r\n');
    const status = Number(head[0].split(' ')[1]);
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const len = Number(headers['content-length'] || 0);
    if (this.buf.length < end + 4 + len) return null;
    const text = this.buf.subarray(end + 4, end + 4 + len).toString('utf8');
    this.buf = this.buf.subarray(end + 4 + len);
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status, headers, text, json };
  }

  readResponse(ms = 5000) {
    return withTimeout(
      new Promise((resolve, reject) => {
        const attempt = () => {
          const r = this.tryParse();
          if (r) resolve(r);
          else if (this.ended) reject(new Error('connection closed before a complete response'));
          else this.waiters.push(attempt);
        };
        attempt();
      }),
      ms,
      'raw response',
    );
  }

  destroy() {
    this.sock.destroy();
  }
}

module.exports = {
  APP_DIR,
  HOST,
  RawConn,
  baseEnv,
  canConnect,
  freePort,
  request,
  sleep,
  spawnApp,
  startServer,
  withTimeout,
};
