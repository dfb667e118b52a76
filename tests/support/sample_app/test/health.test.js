'use strict';
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');

const { startServer, request, freePort } = require('./helpers/app');
const { fakeMongo, fakeRedis } = require('./helpers/fakes');
const { encodePing, encodeRespCommand, decodeBson, checkRedis, checkMongo } = require('../lib/deps');

describe('wire encoding (lib/deps)', () => {
  test('OP_MSG ping is byte-exact', () => {
    const msg = encodePing(0x01020304);
    const expected =
      '33000000' + // messageLength 51
      '04030201' + // requestID
      '00000000' + // responseTo
      'dd070000' + // opCode 2013 OP_MSG
      '00000000' + // flagBits
      '00' + // section kind 0
      '1e000000' + // BSON doc size 30
      '10' + '70696e6700' + '01000000' + // int32 "ping": 1
      '02' + '24646200' + '06000000' + '61646d696e00' + // string "$db": "admin"
      '00'; // doc terminator
    assert.equal(msg.toString('hex'), expected);
  });

  test('RESP command encoding', () => {
    assert.equal(encodeRespCommand(['AUTH', 'pässword']).toString(), '*2\r\n$4\r\nAUTH\r\n$9\r\npässword\r\n');
  });

  test('BSON decoder reads doubles, strings, nested docs, timestamps, int64, bool', () => {
    const hex =
      '4d000000' +
      '01' + '6f6b00' + '000000000000f03f' + // ok: 1.0
      '02' + '6d736700' + '03000000' + '686900' + // msg: "hi"
      '03' + '6e00' + '0c000000' + '10' + '7800' + '05000000' + '00' + // n: {x: 5}
      '11' + '747300' + '0100000002000000' + // ts: Timestamp
      '12' + '6c00' + '0700000000000000' + // l: int64 7
      '08' + '6200' + '01' + // b: true
      '0a' + '6e756c6c00' + // null: null
      '00';
    const d = decodeBson(Buffer.from(hex, 'hex'));
    assert.equal(d.ok, 1);
    assert.equal(d.msg, 'hi');
    assert.deepEqual(d.n, { x: 5 });
    assert.equal(d.l, 7);
    assert.equal(d.b, true);
    assert.equal(d.null, null);
    assert.throws(() => decodeBson(Buffer.from('0500000001', 'hex')), /terminator/);
  });
});

describe('dependency checks against fakes (lib/deps)', { concurrency: true }, () => {
  test('redis: AUTH then PING against a fake; wrong password fails without leaking it', async (t) => {
    const fake = await fakeRedis({ password: 's3cr3t-pw' });
    t.after(fake.close);
    const ok = await checkRedis({ host: '127.0.0.1', port: fake.port, password: 's3cr3t-pw' }, 5000);
    assert.equal(ok.status, 'ok', JSON.stringify(ok));
    assert.deepEqual(fake.commands, [['AUTH', 's3cr3t-pw'], ['PING']]);
    const bad = await checkRedis({ host: '127.0.0.1', port: fake.port, password: 'wrong-pw-123' }, 5000);
    assert.equal(bad.status, 'fail');
    assert.match(bad.error, /AUTH failed: WRONGPASS/);
    assert.ok(!JSON.stringify(bad).includes('wrong-pw-123'));
    const noauth = await checkRedis({ host: '127.0.0.1', port: fake.port }, 5000);
    assert.match(noauth.error, /NOAUTH/);
  });

  test('mongodb: ok against a fake, ok:0 fails, silent server times out', async (t) => {
    const ok = await fakeMongo({ mode: 'ok' });
    const notok = await fakeMongo({ mode: 'notok' });
    const silent = await fakeMongo({ mode: 'silent' });
    t.after(ok.close);
    t.after(notok.close);
    t.after(silent.close);
    const r1 = await checkMongo({ hosts: [{ host: '127.0.0.1', port: ok.port }] }, 5000);
    assert.equal(r1.status, 'ok', JSON.stringify(r1));
    assert.deepEqual(ok.errors, []);
    assert.deepEqual(ok.requests, [{ ping: 1, $db: 'admin' }]);
    const r2 = await checkMongo({ hosts: [{ host: '127.0.0.1', port: notok.port }] }, 5000);
    assert.equal(r2.status, 'fail');
    assert.match(r2.error, /ok=0: not primary/);
    const t0 = Date.now();
    const r3 = await checkMongo({ hosts: [{ host: '127.0.0.1', port: silent.port }] }, 200);
    assert.equal(r3.status, 'fail');
    assert.match(r3.error, /timeout after 200 ms/);
    assert.ok(Date.now() - t0 < 3000);
  });

  test('mongodb: tries the next host when the first is down', async (t) => {
    const ok = await fakeMongo({ mode: 'ok' });
    t.after(ok.close);
    const closed = await freePort();
    const r = await checkMongo(
      {
        hosts: [
          { host: '127.0.0.1', port: closed },
          { host: '127.0.0.1', port: ok.port },
        ],
      },
      5000,
    );
    assert.equal(r.status, 'ok', JSON.stringify(r));
  });
});

function assertJson(res) {
  assert.equal(res.headers['content-type'], 'application/json');
  assert.ok(res.json, `JSON body expected, got ${res.text}`);
}

describe('GET /health', { concurrency: true }, () => {
  test('200 with checks skipped when no dependency is configured', async (t) => {
    const app = await startServer(t);
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 200);
    assertJson(res);
    assert.equal(res.headers['x-app-version'], '1.0.0');
    assert.equal(res.json.status, 'ok');
    assert.equal(res.json.version, '1.0.0');
    assert.equal(res.json.pid, app.pid);
    assert.equal(typeof res.json.uptime_s, 'number');
    assert.equal(res.json.checks.mongodb.status, 'skipped');
    assert.equal(res.json.checks.redis.status, 'skipped');
    assert.equal(res.json.reason, undefined);
  });

  test('503 naming redis when a required redis is down; password never shown', async (t) => {
    const closed = await freePort();
    const app = await startServer(t, {
      env: { REDIS_URL: `redis://:TopSecretPw42@127.0.0.1:${closed}/0`, HEALTH_REQUIRE_REDIS: 'true' },
    });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 503);
    assertJson(res);
    assert.equal(res.json.status, 'fail');
    assert.match(res.json.reason, /redis/);
    assert.equal(res.json.checks.redis.status, 'fail');
    assert.equal(res.json.checks.redis.required, true);
    assert.match(res.json.checks.redis.error, /ECONNREFUSED/);
    assert.equal(typeof res.json.checks.redis.latency_ms, 'number');
    assert.ok(!res.text.includes('TopSecretPw42'), 'password must not appear in /health');
    assert.ok(!app.stdout.includes('TopSecretPw42') && !app.stderr.includes('TopSecretPw42'), 'nor in logs');
  });

  test('200 when a failing redis is not required (reported, non-fatal)', async (t) => {
    const closed = await freePort();
    const app = await startServer(t, {
      env: { REDIS_URL: `redis://127.0.0.1:${closed}`, HEALTH_REQUIRE_REDIS: 'false' },
    });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 200);
    assert.equal(res.json.status, 'ok');
    assert.equal(res.json.checks.redis.status, 'fail');
    assert.equal(res.json.checks.redis.required, false);
  });

  test('ok with a fake RESP server (AUTH + PING); password not in body', async (t) => {
    const fake = await fakeRedis({ password: 'RedisPw-xyz-987' });
    t.after(fake.close);
    const app = await startServer(t, {
      env: { REDIS_URL: `redis://:RedisPw-xyz-987@127.0.0.1:${fake.port}`, HEALTH_REQUIRE_REDIS: 'true', DEP_TIMEOUT_MS: 5000 },
    });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.checks.redis.status, 'ok');
    assert.deepEqual(fake.commands.slice(0, 2), [['AUTH', 'RedisPw-xyz-987'], ['PING']]);
    assert.ok(!res.text.includes('RedisPw-xyz-987'));
  });

  test('503 with a wrong redis password', async (t) => {
    const fake = await fakeRedis({ password: 'right-one' });
    t.after(fake.close);
    const app = await startServer(t, { env: { REDIS_URL: `redis://:wrong-one-1@127.0.0.1:${fake.port}`, DEP_TIMEOUT_MS: 5000 } });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 503);
    assert.match(res.json.checks.redis.error, /WRONGPASS/);
    assert.ok(!res.text.includes('wrong-one-1'));
  });

  test('ok with a fake mongod answering OP_MSG {ok: 1}', async (t) => {
    const fake = await fakeMongo({ mode: 'ok' });
    t.after(fake.close);
    const app = await startServer(t, {
      env: { MONGODB_URI: `mongodb://app:MongoPw-555@127.0.0.1:${fake.port}/appdb`, HEALTH_REQUIRE_MONGODB: 'true', DEP_TIMEOUT_MS: 5000 },
    });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.checks.mongodb.status, 'ok');
    assert.deepEqual(fake.errors, []);
    assert.deepEqual(fake.requests[0], { ping: 1, $db: 'admin' });
    assert.ok(!res.text.includes('MongoPw-555'));
  });

  test('503 naming mongodb when it is down (closed port)', async (t) => {
    const closed = await freePort();
    const app = await startServer(t, { env: { MONGODB_URI: `mongodb://u:MongoPw-666@127.0.0.1:${closed}/x` } });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 503);
    assert.match(res.json.reason, /mongodb/);
    assert.equal(res.json.checks.mongodb.status, 'fail');
    assert.ok(!res.text.includes('MongoPw-666'));
  });

  test('a hanging dependency is bounded by DEP_TIMEOUT_MS', async (t) => {
    const fake = await fakeMongo({ mode: 'silent' });
    t.after(fake.close);
    const app = await startServer(t, {
      env: { MONGODB_URI: `mongodb://127.0.0.1:${fake.port}`, DEP_TIMEOUT_MS: 300 },
    });
    const t0 = Date.now();
    const res = await request(app.port, { path: '/health' });
    const took = Date.now() - t0;
    assert.equal(res.status, 503);
    assert.match(res.json.checks.mongodb.error, /timeout after 300 ms/);
    assert.ok(took >= 250 && took < 4000, `took ${took} ms`);
  });

  test('FAIL_HEALTH=1: /health 503 "forced unhealthy" while /ready stays 200', async (t) => {
    const app = await startServer(t, { env: { FAIL_HEALTH: '1' } });
    const res = await request(app.port, { path: '/health' });
    assert.equal(res.status, 503);
    assert.equal(res.json.status, 'fail');
    assert.equal(res.json.reason, 'forced unhealthy');
    const ready = await request(app.port, { path: '/ready' });
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.json.ready, true);
  });
});

// Optional: the real thing, when a redis-server binary happens to be installed.
const REDIS_SERVER = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => require('node:fs').existsSync(p));

describe('real redis-server (skipped when not installed)', () => {
  test('/health is ok with AUTH against redis-server, 503 with a wrong password', { skip: !REDIS_SERVER && 'redis-server not installed' }, async (t) => {
    const { spawn } = require('node:child_process');
    const { canConnect, sleep } = require('./helpers/app');
    const port = await freePort();
    const redis = spawn(
      REDIS_SERVER,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', 'real pw/1'],
      { stdio: 'ignore' },
    );
    t.after(() => redis.kill('SIGKILL'));
    for (let i = 0; i < 100 && !(await canConnect(port)); i += 1) await sleep(50);
    const [good, bad] = await Promise.all([
      startServer(t, { env: { REDIS_URL: `redis://:real%20pw%2F1@127.0.0.1:${port}/0`, DEP_TIMEOUT_MS: 5000 } }),
      startServer(t, { env: { REDIS_URL: `redis://:nope-nope@127.0.0.1:${port}/0`, DEP_TIMEOUT_MS: 5000 } }),
    ]);
    const ok = await request(good.port, { path: '/health' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.checks.redis.status, 'ok');
    const fail = await request(bad.port, { path: '/health' });
    assert.equal(fail.status, 503);
    assert.match(fail.json.checks.redis.error, /WRONGPASS/);
    assert.ok(!fail.text.includes('nope-nope'));
  });
});
