'use strict';
// Under PM2 the app has an IPC channel to the daemon, which keeps Node alive on
// its own: a process that refuses to start must still exit (PM2 then sees a
// crash instead of an "online" process that never listens).
const { test } = require('node:test');
const assert = require('node:assert');
const path = require('node:path');
const { baseEnv, freePort, spawnApp } = require('./helpers/app');

const PRELOAD = `--require ${path.join(__dirname, 'helpers', 'ipc-listener-preload.js')}`;

for (const script of ['server.js', 'worker.js']) {
  test(`${script}: config error exits 78 with an IPC channel open`, async () => {
    const app = spawnApp({ script, ipc: true, env: baseEnv({ APP_ENV: 'nope', PORT: String(await freePort()), NODE_OPTIONS: PRELOAD }) });
    try {
      await app.waitExit(5000);
    } finally {
      app.child.kill('SIGKILL'); // a hanging process must not keep the runner alive
    }
    assert.strictEqual(app.exitCode, 78);
  });

  test(`${script}: FAIL_START exits 1 with an IPC channel open`, async () => {
    const app = spawnApp({ script, ipc: true, env: baseEnv({ FAIL_START: '1', PORT: String(await freePort()), NODE_OPTIONS: PRELOAD }) });
    try {
      await app.waitExit(5000);
    } finally {
      app.child.kill('SIGKILL');
    }
    assert.strictEqual(app.exitCode, 1);
  });
}
