'use strict';
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');

const { startServer, request, RawConn } = require('./helpers/app');

describe('HTTP endpoints', { concurrency: true }, () => {
  let app;
  before(async () => {
    app = await startServer(null, { env: { APP_VERSION: '1.2.3-test', SLOW_MAX_MS: 700 } });
  });
  after(() => app && app.kill());

  test('GET /version returns version, pid, node and the X-App-Version header', async () => {
    const res = await request(app.port, { path: '/version' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.headers['x-app-version'], '1.2.3-test');
    assert.deepEqual(res.json, { version: '1.2.3-test', pid: app.pid, node: process.version });
  });

  test('GET /ready is 200 {ready: true} once started', async () => {
    const res = await request(app.port, { path: '/ready' });
    assert.equal(res.status, 200);
    assert.equal(res.json.ready, true);
    assert.equal(res.headers['x-app-version'], '1.2.3-test');
  });

  test('GET / says hello', async () => {
    const res = await request(app.port, { path: '/?x=1' });
    assert.equal(res.status, 200);
    assert.equal(res.json.version, '1.2.3-test');
    assert.equal(res.json.app_env, 'lab');
    assert.match(res.json.message, /hello/);
  });

  test('unknown path is a 404 JSON carrying X-App-Version', async () => {
    const res = await request(app.port, { path: '/nope' });
    assert.equal(res.status, 404);
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.headers['x-app-version'], '1.2.3-test');
    assert.deepEqual(res.json, { error: 'not found', path: '/nope' });
  });

  test('wrong method is a 405 with Allow', async () => {
    const res = await request(app.port, { method: 'DELETE', path: '/health' });
    assert.equal(res.status, 405);
    assert.equal(res.headers.allow, 'GET, HEAD');
    assert.equal(res.headers['x-app-version'], '1.2.3-test');
  });

  test('HEAD /health has headers and no body', async () => {
    const res = await request(app.port, { method: 'HEAD', path: '/health' });
    assert.equal(res.status, 200);
    assert.equal(res.headers['x-app-version'], '1.2.3-test');
    assert.equal(res.text, '');
  });

  test('POST /echo returns the body byte length (streamed, 3 MiB)', async () => {
    const body = Buffer.alloc(3 * 1024 * 1024 + 7, 0x61);
    const res = await request(app.port, {
      method: 'POST',
      path: '/echo',
      body,
      headers: { 'content-type': 'application/octet-stream' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.json.bytes, body.length);
    const utf8 = await request(app.port, { method: 'POST', path: '/echo', body: 'héllo' });
    assert.equal(utf8.json.bytes, 6);
    const empty = await request(app.port, { method: 'POST', path: '/echo' });
    assert.equal(empty.json.bytes, 0);
  });

  test('GET /slow?ms=N waits N ms; bad ms is 400', async () => {
    const t0 = Date.now();
    const res = await request(app.port, { path: '/slow?ms=300' });
    const took = Date.now() - t0;
    assert.equal(res.status, 200);
    assert.deepEqual(res.json.slept_ms, 300);
    assert.ok(took >= 290, `took ${took} ms`);
    const bad = await request(app.port, { path: '/slow?ms=soon' });
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['x-app-version'], '1.2.3-test');
  });

  test('GET /slow caps the sleep at SLOW_MAX_MS (default 120000)', async () => {
    const t0 = Date.now();
    const res = await request(app.port, { path: '/slow?ms=99999999999' });
    assert.equal(res.status, 200);
    assert.equal(res.json.slept_ms, 700);
    assert.ok(Date.now() - t0 < 5000);
  });

  test('requests are logged as one JSON line with method, path, status, ms and x-request-id', async () => {
    await request(app.port, { path: '/version?secret=1', headers: { 'x-request-id': 'req-abc-123' } });
    const ev = await app.waitFor(
      () => app.events.find((e) => e.event === 'request' && e.request_id === 'req-abc-123'),
      'request log line',
    );
    assert.equal(ev.method, 'GET');
    assert.equal(ev.path, '/version', 'query string is not logged');
    assert.equal(ev.status, 200);
    assert.equal(typeof ev.ms, 'number');
  });

  test('X-Request-Id is echoed back', async () => {
    const res = await request(app.port, { path: '/', headers: { 'x-request-id': 'rid-1' } });
    assert.equal(res.headers['x-request-id'], 'rid-1');
  });

  test('keep-alive is on while running (no Connection: close)', async () => {
    const conn = new RawConn(app.port);
    try {
      await conn.connected;
      conn.get('/version');
      const r1 = await conn.readResponse();
      conn.get('/ready');
      const r2 = await conn.readResponse();
      assert.equal(r1.status, 200);
      assert.equal(r2.status, 200);
      assert.notEqual(r1.headers.connection, 'close');
      assert.match(r1.headers['keep-alive'] || '', /timeout=65/);
    } finally {
      conn.destroy();
    }
  });
});
