'use strict';
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');

const { spawnApp, baseEnv, freePort, sleep } = require('./helpers/app');
const { fakeRedis } = require('./helpers/fakes');

function startWorker(t, env = {}) {
  const w = spawnApp({ script: 'worker.js', ipc: true, env: baseEnv({ WORKER_INTERVAL_MS: 100, ...env }) });
  t.after(() => w.kill());
  return w;
}

describe('worker.js', { concurrency: true }, () => {
  test("sends 'ready', logs heartbeats, exits 0 on SIGTERM", async (t) => {
    const w = startWorker(t);
    await w.waitFor(() => w.messages.find((m) => m.msg === 'ready'), "'ready' message");
    await w.waitFor(() => w.events.filter((e) => e.event === 'heartbeat').length >= 3, '3 heartbeats', 5000);
    const beats = w.events.filter((e) => e.event === 'heartbeat');
    assert.deepEqual(
      beats.slice(0, 3).map((e) => e.tick),
      [1, 2, 3],
    );
    assert.equal(beats[0].role, 'worker');
    assert.equal(beats[0].version, '1.0.0');
    w.child.kill('SIGTERM');
    const { code } = await w.waitExit(10000);
    assert.equal(code, 0);
    assert.ok(w.events.some((e) => e.event === 'shutdown_end'));
  });

  test('finishes the tick in progress before exiting (slow redis ping)', async (t) => {
    // A "redis" that accepts but never answers: the tick lasts DEP_TIMEOUT_MS.
    const net = require('node:net');
    const hang = net.createServer(() => {});
    await new Promise((r) => hang.listen(0, '127.0.0.1', r));
    t.after(() => hang.close());
    const w = startWorker(t, {
      REDIS_URL: `redis://:WorkerPw-1@127.0.0.1:${hang.address().port}`,
      DEP_TIMEOUT_MS: 1500,
      WORKER_INTERVAL_MS: 5000,
    });
    await w.waitFor(() => w.messages.find((m) => m.msg === 'ready'), "'ready' message");
    await sleep(150); // first tick is now waiting on the silent redis
    const t0 = Date.now();
    w.child.kill('SIGINT');
    const { code } = await w.waitExit(10000);
    assert.equal(code, 0);
    assert.ok(Date.now() - t0 >= 300, 'waited for the tick');
    const begin = w.events.find((e) => e.event === 'shutdown_begin');
    assert.equal(begin.tick_in_progress, true);
    const beat = w.events.find((e) => e.event === 'heartbeat');
    assert.equal(beat.redis, 'fail');
    assert.match(beat.redis_error, /timeout/);
    assert.ok(!w.stdout.includes('WorkerPw-1'));
  });

  test('pings redis on each heartbeat when REDIS_URL is set', async (t) => {
    const fake = await fakeRedis({ password: 'wpw-123456' });
    t.after(fake.close);
    const w = startWorker(t, { REDIS_URL: `redis://:wpw-123456@127.0.0.1:${fake.port}`, DEP_TIMEOUT_MS: 5000 });
    await w.waitFor(() => w.events.filter((e) => e.event === 'heartbeat').length >= 2, '2 heartbeats');
    assert.equal(w.events.find((e) => e.event === 'heartbeat').redis, 'ok');
    assert.ok(fake.commands.filter((c) => c[0] === 'PING').length >= 2);
    assert.ok(!w.stdout.includes('wpw-123456'));
    w.child.send('shutdown');
    assert.equal((await w.waitExit(10000)).code, 0);
  });

  test('does not need PORT; PORT is not bound', async (t) => {
    const port = await freePort();
    const w = startWorker(t, { PORT: port });
    await w.waitFor(() => w.messages.find((m) => m.msg === 'ready'), "'ready' message");
    const blocker = require('node:net').createServer();
    await new Promise((resolve, reject) => {
      blocker.on('error', reject);
      blocker.listen(port, '127.0.0.1', resolve);
    });
    blocker.close();
  });

  test('invalid config exits 78; FAIL_START exits 1; CRASH_AFTER_MS exits 1', async (t) => {
    const bad = spawnApp({ script: 'worker.js', env: baseEnv({ APP_ENV: 'moon' }) });
    t.after(() => bad.kill());
    const failStart = startWorker(t, { FAIL_START: 'true' });
    const crash = startWorker(t, { CRASH_AFTER_MS: 300 });
    assert.equal((await bad.waitExit(10000)).code, 78);
    assert.match(bad.stderr, /config error: APP_ENV must be one of/);
    assert.equal((await failStart.waitExit(10000)).code, 1);
    assert.equal(failStart.messages.length, 0);
    assert.equal((await crash.waitExit(10000)).code, 1);
    assert.equal(crash.messages[0].msg, 'ready');
  });
});
