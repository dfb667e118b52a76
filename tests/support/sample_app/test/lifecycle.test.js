'use strict';
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');

const { startServer, request, RawConn, canConnect, sleep, withTimeout, HOST } = require('./helpers/app');

function connectError(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: HOST, port });
    s.setTimeout(1000, () => {
      s.destroy();
      resolve('timeout');
    });
    s.on('connect', () => {
      s.destroy();
      resolve(null);
    });
    s.on('error', (err) => resolve(err.code));
  });
}

describe('graceful shutdown', { concurrency: true }, () => {
  test('SIGTERM drains: in-flight /slow completes, new connections refused, keep-alive gets Connection: close, exit 0', async (t) => {
    const app = await startServer(t, { env: { SHUTDOWN_TIMEOUT_MS: 8000, SHUTDOWN_IDLE_GRACE_MS: 2000 } });
    const { port } = app;
    const conns = [];
    t.after(() => conns.forEach((c) => c.destroy()));
    const open = async () => {
      const c = new RawConn(port);
      conns.push(c);
      await c.connected;
      c.get('/version');
      const r = await c.readResponse();
      assert.equal(r.status, 200);
      assert.notEqual(r.headers.connection, 'close', 'keep-alive while running');
      return c;
    };

    const idle = await open(); // A: idle at SIGTERM and stays idle
    const reuse = await open(); // B: idle at SIGTERM, reused during the drain
    const partial = await open(); // D: has sent half of its next request at SIGTERM

    // C: the in-flight slow request.
    const slowConn = new RawConn(port);
    conns.push(slowConn);
    await slowConn.connected;
    const t0 = Date.now();
    slowConn.get('/slow?ms=1500', 'X-Request-Id: drain-1\r\n');

    await sleep(150);
    partial.send(`GET /version HTTP/1.1\r\nHost: ${HOST}\r\n`); // headers not finished yet
    await sleep(50);

    app.child.kill('SIGTERM');
    const begin = await app.waitForEvent('shutdown_begin', 10000);
    assert.equal(begin.idle_grace_ms, 2000);

    // New connections are refused once the listener is closed.
    assert.equal(await connectError(port), 'ECONNREFUSED');

    // A request on a kept-alive socket during the drain is answered, with
    // Connection: close, and /ready reports draining.
    reuse.get('/ready');
    const during = await reuse.readResponse(8000);
    assert.equal(during.status, 503);
    assert.deepEqual(during.json, { ready: false, state: 'draining', pid: app.pid });
    assert.equal(during.headers.connection, 'close');
    assert.equal(during.headers['x-app-version'], '1.0.0');
    await withTimeout(reuse.closed, 3000, 'server to close the reused socket');

    partial.send('\r\n');
    const finished = await partial.readResponse(8000);
    assert.equal(finished.status, 200);
    assert.equal(finished.headers.connection, 'close');
    await withTimeout(partial.closed, 3000, 'server to close the socket');

    // The socket that stayed idle is closed by the server after the grace.
    await withTimeout(idle.closed, 5000, 'idle keep-alive socket to be closed');
    const idleClosed = await app.waitForEvent('shutdown_idle_closed');
    const idleAfter = Date.parse(idleClosed.ts) - Date.parse(begin.ts);
    assert.ok(idleAfter >= 1990 && idleAfter < 4000, `idle sockets closed after ${idleAfter} ms`);

    // The in-flight request completes normally.
    const slow = await slowConn.readResponse(8000);
    assert.equal(slow.status, 200);
    assert.equal(slow.json.slept_ms, 1500);
    assert.equal(slow.headers.connection, 'close');
    assert.ok(Date.now() - t0 >= 1450);

    const { code, signal } = await app.waitExit(10000);
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.ok(app.events.some((e) => e.event === 'shutdown_end'));
    assert.ok(app.events.some((e) => e.event === 'request' && e.request_id === 'drain-1' && e.status === 200));
  });

  test('SHUTDOWN_IDLE_GRACE_MS=0 closes idle keep-alive sockets at once', async (t) => {
    const app = await startServer(t, { env: { SHUTDOWN_IDLE_GRACE_MS: 0 } });
    const idle = new RawConn(app.port);
    const slowConn = new RawConn(app.port);
    t.after(() => {
      idle.destroy();
      slowConn.destroy();
    });
    await Promise.all([idle.connected, slowConn.connected]);
    idle.get('/version');
    await idle.readResponse();
    slowConn.get('/slow?ms=1000');
    await sleep(100);
    app.child.kill('SIGTERM');
    assert.equal((await app.waitForEvent('shutdown_begin')).idle_grace_ms, 0);
    await withTimeout(idle.closed, 5000, 'idle socket to be closed');
    assert.equal(slowConn.ended, false, 'idle socket closed while /slow still runs');
    assert.equal((await slowConn.readResponse(8000)).status, 200);
    assert.equal((await app.waitExit(10000)).code, 0);
  });

  test('SHUTDOWN_TIMEOUT_MS=300 with a 5 s request in flight exits 1 within ~1 s', async (t) => {
    const app = await startServer(t, { env: { SHUTDOWN_TIMEOUT_MS: 300 } });
    const conn = new RawConn(app.port);
    t.after(() => conn.destroy());
    await conn.connected;
    conn.get('/slow?ms=5000');
    await sleep(200);
    const t0 = Date.now();
    app.child.kill('SIGTERM');
    const { code } = await app.waitExit(10000);
    const took = Date.now() - t0;
    assert.equal(code, 1);
    assert.ok(took >= 250 && took < 2500, `exited after ${took} ms`);
    const ts = (name) => Date.parse(app.events.find((e) => e.event === name).ts);
    const gave = ts('shutdown_timeout') - ts('shutdown_signal');
    assert.ok(gave >= 295 && gave < 800, `gave up after ${gave} ms`);
    assert.equal(app.events.find((e) => e.event === 'shutdown_timeout').in_flight, 1);
  });

  test('SIGINT (what PM2 sends) with nothing in flight exits 0 at once', async (t) => {
    const app = await startServer(t);
    const t0 = Date.now();
    app.child.kill('SIGINT');
    const { code } = await app.waitExit(10000);
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(app.events.find((e) => e.event === 'shutdown_signal').reason, 'SIGINT');
  });

  test("PM2 'shutdown' IPC message triggers the same graceful shutdown", async (t) => {
    const app = await startServer(t, { ipc: true });
    app.child.send('shutdown');
    const { code } = await app.waitExit(10000);
    assert.equal(code, 0);
    assert.equal(app.events.find((e) => e.event === 'shutdown_signal').reason, 'message:shutdown');
  });

  test('a repeated signal while draining is ignored (no early exit)', async (t) => {
    const app = await startServer(t, { env: { SHUTDOWN_TIMEOUT_MS: 5000 } });
    const pending = request(app.port, { path: '/slow?ms=600' });
    await sleep(100);
    app.child.kill('SIGINT');
    await app.waitForEvent('shutdown_begin', 10000);
    app.child.kill('SIGTERM');
    const res = await pending;
    assert.equal(res.status, 200);
    assert.equal((await app.waitExit(10000)).code, 0);
    assert.ok(app.events.some((e) => e.event === 'shutdown_repeat_ignored'));
  });
});

describe('PM2 wait_ready and failure switches', { concurrency: true }, () => {
  test("'ready' IPC message arrives only once the port accepts connections", async (t) => {
    const app = await startServer(t, { ipc: true, waitReady: false });
    const { msg } = await app.waitFor(() => app.messages.find((m) => m.msg === 'ready'), "'ready' message");
    assert.equal(msg, 'ready');
    // No sleep: at the moment 'ready' is received the listener must be up.
    assert.equal(await canConnect(app.port), true);
    assert.equal((await request(app.port, { path: '/ready' })).status, 200);
    assert.equal(app.messages.filter((m) => m.msg === 'ready').length, 1);
  });

  test('START_DELAY_MS: not reachable before the delay, ready after; READY_DELAY_MS: /ready 503 "starting"', async (t) => {
    const t0 = Date.now();
    const app = await startServer(t, { ipc: true, waitReady: false, env: { START_DELAY_MS: 700, READY_DELAY_MS: 1000 } });
    await sleep(250);
    assert.equal(await canConnect(app.port), false, 'must not listen during START_DELAY_MS');
    assert.equal(app.messages.length, 0);

    await app.waitForEvent('listening', 10000);
    const starting = await request(app.port, { path: '/ready' });
    assert.equal(app.messages.length, 0, "no 'ready' before READY_DELAY_MS has passed");
    assert.equal(starting.status, 503);
    assert.deepEqual(starting.json, { ready: false, state: 'starting', pid: app.pid });

    const ready = await app.waitFor(() => app.messages.find((m) => m.msg === 'ready'), "'ready' message", 5000);
    assert.ok(ready.at - t0 >= 1650, `ready after ${ready.at - t0} ms`);
    const res = await request(app.port, { path: '/ready' });
    assert.equal(res.status, 200);
  });

  test('SIGTERM during START_DELAY_MS exits 0 without ever becoming ready', async (t) => {
    const app = await startServer(t, { ipc: true, waitReady: false, env: { START_DELAY_MS: 3000 } });
    await app.waitForEvent('starting');
    app.child.kill('SIGTERM');
    const { code } = await app.waitExit(10000);
    assert.equal(code, 0);
    assert.equal(app.messages.length, 0);
  });

  test('CRASH_AFTER_MS: becomes ready, then exits 1 about that much later', async (t) => {
    const app = await startServer(t, { ipc: true, env: { CRASH_AFTER_MS: 600 } });
    assert.equal((await request(app.port, { path: '/health' })).status, 200, 'healthy before the crash');
    const { code } = await app.waitExit(10000);
    assert.equal(code, 1);
    // The child's own timestamps: pipe delivery to the test can lag.
    const ts = (name) => Date.parse(app.events.find((e) => e.event === name).ts);
    const after = ts('crash') - ts('ready');
    assert.ok(after >= 590 && after < 1500, `crashed ${after} ms after ready`);
  });

  test('FAIL_START=1: exits 1 at once with a message, never ready, never listens', async (t) => {
    const app = await startServer(t, { ipc: true, waitReady: false, env: { FAIL_START: '1' } });
    const { code } = await app.waitExit(10000);
    assert.equal(code, 1);
    assert.match(app.stderr, /FAIL_START/);
    assert.equal(app.messages.length, 0);
    assert.equal(await canConnect(app.port), false);
  });

  test('a port already in use exits 1 with listen_error', async (t) => {
    const blocker = net.createServer();
    await new Promise((r) => blocker.listen(0, HOST, r));
    t.after(() => blocker.close());
    const { spawnApp, baseEnv } = require('./helpers/app');
    const app = spawnApp({ env: baseEnv({ PORT: blocker.address().port }) });
    t.after(() => app.kill());
    const { code } = await app.waitExit(10000);
    assert.equal(code, 1);
    assert.match(app.stderr, /EADDRINUSE/);
  });
});
