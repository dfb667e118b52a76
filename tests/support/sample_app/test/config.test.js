'use strict';
const { test, describe } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const { APP_DIR, baseEnv } = require('./helpers/app');
const { loadConfig, parseMongoUri, parseRedisUrl, EX_CONFIG } = require('../lib/config');

// Run server.js / worker.js synchronously (config errors exit before listening).
function runCli(env, args = [], script = 'server.js') {
  const r = spawnSync(process.execPath, [script, ...args], { cwd: APP_DIR, env, encoding: 'utf8', timeout: 10000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

const configErrorLines = (stderr) => stderr.split('\n').filter((l) => l.startsWith('config error: '));

describe('config validation at start-up (exit 78 before listening)', { concurrency: true }, () => {
  test('EX_CONFIG is 78', () => {
    assert.equal(EX_CONFIG, 78);
  });

  test('missing PORT exits 78 and names PORT', () => {
    const r = runCli(baseEnv({ PORT: undefined }));
    assert.equal(r.code, 78);
    assert.deepEqual(configErrorLines(r.stderr), ['config error: PORT is required (integer 1-65535)']);
    assert.equal(r.stdout, '', 'nothing logged: the server never started');
  });

  for (const bad of ['abc', '0', '65536', '-1', '80.5', ' ']) {
    test(`invalid PORT ${JSON.stringify(bad)} names PORT and the bad value`, () => {
      const r = runCli(baseEnv({ PORT: bad }));
      assert.equal(r.code, 78);
      const lines = configErrorLines(r.stderr);
      assert.equal(lines.length, 1, r.stderr);
      assert.equal(lines[0], `config error: PORT must be an integer 1-65535, got ${JSON.stringify(bad)}`);
    });
  }

  test('invalid APP_ENV names APP_ENV, the allowed values and the bad value', () => {
    const r = runCli(baseEnv({ PORT: 3000, APP_ENV: 'prod' }));
    assert.equal(r.code, 78);
    assert.deepEqual(configErrorLines(r.stderr), [
      'config error: APP_ENV must be one of lab, development, staging, production, got "prod"',
    ]);
  });

  test('missing APP_ENV is reported', () => {
    const r = runCli(baseEnv({ PORT: 3000, APP_ENV: undefined }));
    assert.equal(r.code, 78);
    assert.match(r.stderr, /config error: APP_ENV is required/);
  });

  test('all problems are reported, one line each, not just the first', () => {
    const r = runCli(baseEnv({ PORT: 'x', APP_ENV: 'nope', DEP_TIMEOUT_MS: 'soon', HEALTH_REQUIRE_REDIS: 'maybe' }));
    assert.equal(r.code, 78);
    const lines = configErrorLines(r.stderr);
    assert.equal(lines.length, 4, r.stderr);
    for (const key of ['PORT', 'APP_ENV', 'DEP_TIMEOUT_MS', 'HEALTH_REQUIRE_REDIS']) {
      assert.ok(lines.some((l) => l.includes(key)), `${key} reported`);
    }
  });

  test('production without SESSION_SECRET names SESSION_SECRET', () => {
    const r = runCli(baseEnv({ PORT: 3000, APP_ENV: 'production' }));
    assert.equal(r.code, 78);
    assert.deepEqual(configErrorLines(r.stderr), [
      'config error: SESSION_SECRET is required when APP_ENV=production (at least 16 characters)',
    ]);
  });

  test('a too short SESSION_SECRET is rejected without echoing it', () => {
    const secret = 'Sup3rS3cr3tVal!'; // 15 characters
    const r = runCli(baseEnv({ PORT: 3000, APP_ENV: 'production', SESSION_SECRET: secret }));
    assert.equal(r.code, 78);
    assert.match(r.stderr, /config error: SESSION_SECRET must be at least 16 characters .*got 15 characters/);
    assert.ok(!r.stderr.includes(secret), 'secret must not be printed');
    assert.ok(!r.stderr.includes('Sup3r'), 'no part of the secret is printed');
  });

  test('passwords in invalid dependency URLs are never echoed', () => {
    const r = runCli(
      baseEnv({
        PORT: 3000,
        REDIS_URL: 'redis://:hunter2hunter2@127.0.0.1:notaport',
        MONGODB_URI: 'mongodb://app:swordfish99@127.0.0.1:99999/app',
      }),
    );
    assert.equal(r.code, 78);
    const lines = configErrorLines(r.stderr);
    assert.equal(lines.length, 2, r.stderr);
    assert.ok(lines.some((l) => l.includes('REDIS_URL')));
    assert.ok(lines.some((l) => l.includes('MONGODB_URI')));
    assert.ok(!r.stderr.includes('hunter2'));
    assert.ok(!r.stderr.includes('swordfish'));
  });

  test('production with a good secret passes --check-config without printing the secret', () => {
    const secret = 'a-very-long-session-secret-value';
    const r = runCli(
      baseEnv({ PORT: 3000, APP_ENV: 'production', SESSION_SECRET: secret, REDIS_URL: 'redis://:p4ssw0rdXYZ@127.0.0.1:6379/0' }),
      ['--check-config'],
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^config ok: /);
    const summary = JSON.parse(r.stdout.replace(/^config ok: /, ''));
    assert.equal(summary.session_secret, 'set');
    assert.equal(summary.redis, 'redis://:***@127.0.0.1:6379/0');
    assert.ok(!r.stdout.includes(secret) && !r.stderr.includes(secret));
    assert.ok(!r.stdout.includes('p4ssw0rdXYZ'));
  });

  test('--check-config exits 0 on valid settings without listening', () => {
    const r = runCli(baseEnv({ PORT: 3000 }), ['--check-config']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^config ok: \{.*"port":3000/);
    assert.ok(!r.stdout.includes('"event":"listening"'));
  });

  test('--check-config exits 78 on invalid settings', () => {
    const r = runCli(baseEnv({ PORT: 'abc' }), ['--check-config']);
    assert.equal(r.code, 78);
    assert.match(r.stderr, /config error: PORT must be an integer 1-65535, got "abc"/);
    assert.equal(r.stdout, '');
  });

  test('unknown CLI arguments are a usage error (64)', () => {
    const r = runCli(baseEnv({ PORT: 3000 }), ['--chek-config']);
    assert.equal(r.code, 64);
    assert.match(r.stderr, /usage/);
  });

  test('worker: PORT is not required, APP_ENV is', () => {
    const ok = runCli(baseEnv({}), ['--check-config'], 'worker.js');
    assert.equal(ok.code, 0, ok.stderr);
    const bad = runCli(baseEnv({ APP_ENV: undefined }), ['--check-config'], 'worker.js');
    assert.equal(bad.code, 78);
    assert.match(bad.stderr, /config error: APP_ENV is required/);
    assert.ok(!bad.stderr.includes('PORT'));
    const badPort = runCli(baseEnv({ PORT: 'x' }), ['--check-config'], 'worker.js');
    assert.equal(badPort.code, 78, 'PORT is still validated when present');
  });

  test('invalid failure switch values are config errors', () => {
    const r = runCli(baseEnv({ PORT: 3000, FAIL_HEALTH: 'sometimes', CRASH_AFTER_MS: '3s' }));
    assert.equal(r.code, 78);
    assert.equal(configErrorLines(r.stderr).length, 2, r.stderr);
  });
});

describe('lib/config unit', () => {
  test('defaults', () => {
    const { config, errors } = loadConfig({ env: { PORT: '8080', APP_ENV: 'staging' } });
    assert.deepEqual(errors, []);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.port, 8080);
    assert.equal(config.shutdownTimeoutMs, 10000);
    assert.equal(config.shutdownIdleGraceMs, 1000);
    assert.equal(config.depTimeoutMs, 1000);
    assert.equal(config.slowMaxMs, 120000);
    assert.equal(config.workerIntervalMs, 5000);
    assert.equal(config.version, JSON.parse(fs.readFileSync(path.join(APP_DIR, 'package.json'), 'utf8')).version);
    assert.equal(config.mongodb, null);
    assert.equal(config.redis, null);
    assert.equal(config.failHealth, false);
    assert.equal(config.crashAfterMs, 0);
  });

  test('APP_VERSION overrides the package version', () => {
    const { config } = loadConfig({ env: { PORT: '1', APP_ENV: 'lab', APP_VERSION: '9.9.9-rc1' } });
    assert.equal(config.version, '9.9.9-rc1');
    const { errors } = loadConfig({ env: { PORT: '1', APP_ENV: 'lab', APP_VERSION: 'has space' } });
    assert.match(errors[0], /APP_VERSION/);
  });

  test('REDIS_URL parsing', () => {
    assert.deepEqual(parseRedisUrl('redis://:p%40ss@redis.local:6380/2').value, {
      host: 'redis.local',
      port: 6380,
      username: '',
      password: 'p@ss',
      db: 2,
      redacted: 'redis://:***@redis.local:6380/2',
    });
    const noPort = parseRedisUrl('redis://127.0.0.1').value;
    assert.equal(noPort.port, 6379);
    assert.equal(noPort.password, '');
    assert.equal(parseRedisUrl('redis://app:pw@[::1]:7000').value.host, '::1');
    assert.match(parseRedisUrl('http://127.0.0.1:6379').error, /REDIS_URL must use the redis:\/\/ scheme/);
    assert.match(parseRedisUrl('rediss://h:1').error, /not supported/);
  });

  test('MONGODB_URI parsing', () => {
    const v = parseMongoUri('mongodb://user:p%40ss@db1:27018,db2/app?replicaSet=rs0').value;
    assert.deepEqual(v.hosts, [
      { host: 'db1', port: 27018 },
      { host: 'db2', port: 27017 },
    ]);
    assert.equal(v.redacted, 'mongodb://user:***@db1:27018,db2:27017/app');
    assert.match(parseMongoUri('mongodb://h:0/x').error, /MONGODB_URI/);
    assert.match(parseMongoUri('postgres://h/x').error, /MONGODB_URI/);
    assert.match(parseMongoUri('mongodb+srv://cluster.example/x').error, /mongodb\+srv/);
  });

  test('HEALTH_REQUIRE_* default to true and accept true/false', () => {
    let r = loadConfig({ env: { PORT: '1', APP_ENV: 'lab' } });
    assert.equal(r.config.requireRedis, true);
    assert.equal(r.config.requireMongodb, true);
    r = loadConfig({ env: { PORT: '1', APP_ENV: 'lab', HEALTH_REQUIRE_REDIS: 'false', HEALTH_REQUIRE_MONGODB: 'FALSE' } });
    assert.equal(r.config.requireRedis, false);
    assert.equal(r.config.requireMongodb, false);
  });

  test('release.json defaults apply and env overrides them', (t) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sample-app-cfg-'));
    t.after(() => fs.rmSync(root, { recursive: true, force: true }));
    fs.writeFileSync(path.join(root, 'package.json'), JSON.stringify({ version: '7.0.0-bad' }));
    fs.writeFileSync(
      path.join(root, 'release.json'),
      JSON.stringify({ version: '7.0.0-bad', defaults: { FAIL_HEALTH: true, CRASH_AFTER_MS: 3000 } }),
    );
    const env = { PORT: '1', APP_ENV: 'lab' };
    let r = loadConfig({ env, appRoot: root });
    assert.deepEqual(r.errors, []);
    assert.equal(r.config.version, '7.0.0-bad');
    assert.equal(r.config.failHealth, true);
    assert.equal(r.config.crashAfterMs, 3000);
    assert.deepEqual(r.config.switchSources, { FAIL_HEALTH: 'release.json', CRASH_AFTER_MS: 'release.json' });
    r = loadConfig({ env: { ...env, FAIL_HEALTH: '0', CRASH_AFTER_MS: '0' }, appRoot: root });
    assert.equal(r.config.failHealth, false);
    assert.equal(r.config.crashAfterMs, 0);

    fs.writeFileSync(path.join(root, 'release.json'), '{not json');
    r = loadConfig({ env, appRoot: root });
    assert.equal(r.config, null);
    assert.deepEqual(r.errors, ['release.json is not valid JSON']);
  });
});
