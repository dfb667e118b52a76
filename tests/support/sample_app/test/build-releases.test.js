'use strict';
const { test, describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawn, spawnSync } = require('node:child_process');

const { APP_DIR, startServer, request } = require('./helpers/app');

const SCRIPT = path.join(APP_DIR, 'scripts', 'build-releases.js');
const EXPECTED = [
  { version: '1.0.0', file: 'nodeops-sample-app-1.0.0.tgz', defaults: {} },
  { version: '2.0.0', file: 'nodeops-sample-app-2.0.0.tgz', defaults: {} },
  { version: '3.0.0-bad', file: 'nodeops-sample-app-3.0.0-bad.tgz', defaults: { FAIL_HEALTH: '1' } },
  { version: '4.0.0-crash', file: 'nodeops-sample-app-4.0.0-crash.tgz', defaults: { CRASH_AFTER_MS: 3000 } },
];

// Async so that builds run in parallel; `umask` lets us prove modes are normalised.
function build(outDir, { env = {}, umask = '022', args = [] } = {}) {
  return new Promise((resolve, reject) => {
    const cmd = `umask ${umask} && exec "$0" "$@"`;
    const child = spawn('sh', ['-c', cmd, process.execPath, SCRIPT, '--out', outDir, ...args], {
      env: { PATH: process.env.PATH, ...env },
      cwd: os.tmpdir(),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const sha256 = (file) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const shaFiles = (dir) =>
  Object.fromEntries(EXPECTED.map((e) => [e.file, fs.readFileSync(path.join(dir, `${e.file}.sha256`), 'utf8')]));

function extract(tgz, dir) {
  fs.mkdirSync(dir, { recursive: true });
  const r = spawnSync('tar', ['-xzf', tgz, '-C', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return dir;
}

describe('scripts/build-releases.js', { concurrency: true }, () => {
  let tmp;
  let outA;
  let outB;
  let outC;
  let results;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sample-app-releases-'));
    outA = path.join(tmp, 'a');
    outB = path.join(tmp, 'b', 'nested'); // created by the script
    outC = path.join(tmp, 'c');
    results = await Promise.all([
      build(outA),
      build(outB, { umask: '077' }),
      build(outC, { env: { SOURCE_DATE_EPOCH: '1700000000', GIT_SHA: 'deadbeefdeadbeefdeadbeefdeadbeefdeadbeef' } }),
    ]);
  });
  after(() => tmp && fs.rmSync(tmp, { recursive: true, force: true }));

  test('builds exit 0', () => {
    for (const r of results) assert.equal(r.code, 0, r.stderr);
  });

  test('4 tarballs with sha256 files in `sha256sum` format and releases.json', () => {
    for (const e of EXPECTED) {
      const file = path.join(outA, e.file);
      assert.ok(fs.existsSync(file), `${e.file} exists`);
      const line = fs.readFileSync(`${file}.sha256`, 'utf8');
      assert.equal(line, `${sha256(file)}  ${e.file}\n`);
    }
    const check = spawnSync('sha256sum', ['-c', ...EXPECTED.map((e) => `${e.file}.sha256`)], { cwd: outA, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const listing = JSON.parse(fs.readFileSync(path.join(outA, 'releases.json'), 'utf8'));
    assert.deepEqual(
      listing,
      EXPECTED.map((e) => ({ version: e.version, file: e.file, sha256: sha256(path.join(outA, e.file)), defaults: e.defaults })),
    );
    assert.deepEqual(fs.readdirSync(outA).sort(), [...EXPECTED.flatMap((e) => [e.file, `${e.file}.sha256`]), 'releases.json'].sort());
  });

  test('rebuilding gives identical sha256 (also under another umask and output dir)', () => {
    assert.deepEqual(shaFiles(outB), shaFiles(outA));
    const c = shaFiles(outC);
    assert.notDeepEqual(c, shaFiles(outA), 'different git sha/time -> different release.json -> different tarball');
  });

  test('tarballs are a flat tree with normalised owners, modes and mtimes', () => {
    const r = spawnSync('tar', ['-tvzf', path.join(outA, EXPECTED[2].file)], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    const lines = r.stdout.trim().split('\n');
    const names = lines.map((l) => l.split(/\s+/).pop());
    for (const required of ['package.json', 'release.json', 'server.js', 'worker.js', 'lib/', 'lib/config.js', 'lib/deps.js']) {
      assert.ok(names.includes(required), `${required} in tarball: ${names.join(' ')}`);
    }
    assert.ok(!names.some((n) => n.startsWith('test/') || n.startsWith('scripts/') || n.startsWith('./')), names.join(' '));
    for (const l of lines) {
      assert.match(l, /^(-rw-r--r--|drwxr-xr-x) 0\/0 /, l);
      assert.match(l, / 1970-01-01 00:00 /, l);
    }
    assert.deepEqual(names, [...names].sort(), 'sorted by name');
    for (const e of EXPECTED) {
      const gz = fs.readFileSync(path.join(outA, e.file));
      assert.equal(gz.readUInt16BE(0), 0x1f8b, 'gzip magic');
      assert.equal(gz[3] & 0x08, 0, 'gzip -n: no original file name stored');
      assert.equal(gz.readUInt32LE(4), 0, 'gzip -n: no timestamp stored');
    }
  });

  test('release.json and package.json carry the version, git sha and build time', () => {
    const dirA = extract(path.join(outA, EXPECTED[3].file), path.join(tmp, 'x-a-v4'));
    const rel = JSON.parse(fs.readFileSync(path.join(dirA, 'release.json'), 'utf8'));
    assert.equal(rel.version, '4.0.0-crash');
    assert.match(rel.git_sha, /^([0-9a-f]{40}|unknown)$/);
    assert.ok(!Number.isNaN(Date.parse(rel.built_at)));
    assert.deepEqual(rel.defaults, { CRASH_AFTER_MS: 3000 });
    assert.equal(JSON.parse(fs.readFileSync(path.join(dirA, 'package.json'), 'utf8')).version, '4.0.0-crash');

    const dirC = extract(path.join(outC, EXPECTED[0].file), path.join(tmp, 'x-c-v1'));
    const relC = JSON.parse(fs.readFileSync(path.join(dirC, 'release.json'), 'utf8'));
    assert.equal(relC.git_sha, 'deadbeefdeadbeefdeadbeefdeadbeefdeadbeef');
    assert.equal(relC.built_at, '2023-11-14T22:13:20.000Z');
  });

  test('--versions selects releases; bad arguments exit 2', async () => {
    const out = path.join(tmp, 'custom');
    const r = await build(out, { args: ['--versions', '5.0.0,6.0.0-nostart'] });
    assert.equal(r.code, 0, r.stderr);
    const listing = JSON.parse(fs.readFileSync(path.join(out, 'releases.json'), 'utf8'));
    assert.deepEqual(
      listing.map((e) => [e.version, e.defaults]),
      [
        ['5.0.0', {}],
        ['6.0.0-nostart', { FAIL_START: '1' }],
      ],
    );
    const bad = await build(path.join(tmp, 'bad'), { args: ['--versions', 'latest'] });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid version/);
    const noOut = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8' });
    assert.equal(noOut.status, 2);
    assert.match(noOut.stderr, /--out DIR is required/);
  });

  test('extracted v2 is healthy and reports 2.0.0; v3 answers /health 503', async (t) => {
    const v2 = extract(path.join(outA, EXPECTED[1].file), path.join(tmp, 'run-v2'));
    const v3 = extract(path.join(outA, EXPECTED[2].file), path.join(tmp, 'run-v3'));
    const [app2, app3, app3ok] = await Promise.all([
      startServer(t, { cwd: v2 }),
      startServer(t, { cwd: v3 }),
      startServer(t, { cwd: v3, env: { FAIL_HEALTH: '0' } }),
    ]);
    const h2 = await request(app2.port, { path: '/health' });
    assert.equal(h2.status, 200);
    assert.equal(h2.json.version, '2.0.0');
    assert.equal(h2.headers['x-app-version'], '2.0.0');
    assert.equal((await request(app2.port, { path: '/version' })).json.version, '2.0.0');

    const h3 = await request(app3.port, { path: '/health' });
    assert.equal(h3.status, 503);
    assert.equal(h3.json.reason, 'forced unhealthy');
    assert.equal(h3.json.version, '3.0.0-bad');
    assert.equal((await request(app3.port, { path: '/ready' })).status, 200, 'looks online to PM2');

    assert.equal((await request(app3ok.port, { path: '/health' })).status, 200, 'env overrides release.json defaults');
  });

  test('extracted v4 becomes ready and crashes ~3 s later', async (t) => {
    const v4 = extract(path.join(outA, EXPECTED[3].file), path.join(tmp, 'run-v4'));
    const app = await startServer(t, { cwd: v4, ipc: true });
    await app.waitFor(() => app.messages.find((m) => m.msg === 'ready'), "'ready' message");
    assert.equal((await request(app.port, { path: '/health' })).status, 200);
    const { code } = await app.waitExit(10000);
    assert.equal(code, 1);
    // Use the child's own timestamps: pipe delivery to the test can lag.
    const ts = (name) => Date.parse(app.events.find((e) => e.event === name).ts);
    const after = ts('crash') - ts('ready');
    assert.ok(after >= 2950 && after < 3500, `crashed ${after} ms after ready`);
  });
});
