'use strict';
// Build reproducible release tarballs of the sample app.
//
//   node scripts/build-releases.js --out DIR [--versions 1.0.0,2.0.0,3.0.0-bad,4.0.0-crash]
//                                  [--crash-after-ms 3000]
//
// For every version V it writes
//   DIR/nodeops-sample-app-V.tgz          flat tree (no top-level directory):
//                                         package.json (version V), server.js,
//                                         worker.js, lib/, README.md, release.json
//   DIR/nodeops-sample-app-V.tgz.sha256   "<hex>  <file>" (sha256sum -c format)
// and DIR/releases.json: [{version, file, sha256, defaults}].
//
// The pre-release tag of V selects baked-in failure defaults (release.json
// "defaults", env vars override them at run time):
//   *-bad*     FAIL_HEALTH=1          (/health answers 503, /ready stays 200)
//   *-crash*   CRASH_AFTER_MS=3000    (becomes ready, exits 1 ~3 s later)
//   *-nostart* FAIL_START=1           (exits 1 at start, never ready)
//   *-slow*    START_DELAY_MS=5000    (listens and becomes ready after 5 s)
//
// Reproducible: same sources + same git commit -> byte-identical tarballs.
// tar runs with --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner
// --format=gnu, modes are normalised (0644/0755), gzip runs with -n, and
// release.json's built_at is SOURCE_DATE_EPOCH if set, else the HEAD commit
// time, else the epoch. git_sha is GIT_SHA if set, else `git rev-parse HEAD`,
// else "unknown".

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const { spawnSync } = require('node:child_process');

const APP_DIR = path.resolve(__dirname, '..');
const NAME = 'nodeops-sample-app';
const DEFAULT_VERSIONS = ['1.0.0', '2.0.0', '3.0.0-bad', '4.0.0-crash'];
const SHIPPED_FILES = ['README.md', 'server.js', 'worker.js'];
const SHIPPED_DIRS = ['lib'];
const VERSION_RE = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z][0-9A-Za-z.-]*)?$/;

function die(msg, code = 2) {
  process.stderr.write(`build-releases: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const opts = { out: null, versions: null, crashAfterMs: 3000 };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, null];
    const value = () => {
      if (inline !== null) return inline;
      i += 1;
      if (i >= argv.length) die(`${flag} needs a value`);
      return argv[i];
    };
    if (flag === '--out') opts.out = value();
    else if (flag === '--versions') {
      opts.versions = opts.versions || [];
      opts.versions.push(...value().split(/[,\s]+/).filter(Boolean));
      // also accept space separated values: --versions 1.0.0 2.0.0
      while (inline === null && i + 1 < argv.length && !argv[i + 1].startsWith('--')) {
        i += 1;
        opts.versions.push(...argv[i].split(/[,\s]+/).filter(Boolean));
      }
    } else if (flag === '--crash-after-ms') {
      const v = value();
      if (!/^\d+$/.test(v) || Number(v) < 1) die('--crash-after-ms must be a positive integer');
      opts.crashAfterMs = Number(v);
    } else if (flag === '-h' || flag === '--help') {
      process.stdout.write('usage: node scripts/build-releases.js --out DIR [--versions V1,V2,...] [--crash-after-ms N]\n');
      process.exit(0);
    } else die(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!opts.out) die('--out DIR is required');
  opts.versions = opts.versions && opts.versions.length ? opts.versions : DEFAULT_VERSIONS;
  for (const v of opts.versions) if (!VERSION_RE.test(v)) die(`invalid version ${JSON.stringify(v)} (expected X.Y.Z[-tag])`);
  if (new Set(opts.versions).size !== opts.versions.length) die('duplicate version in --versions');
  return opts;
}

function defaultsFor(version, crashAfterMs) {
  const dash = version.indexOf('-');
  const tags = dash === -1 ? [] : version.slice(dash + 1).toLowerCase().split(/[.-]/);
  const defaults = {};
  if (tags.includes('bad')) defaults.FAIL_HEALTH = '1';
  if (tags.includes('crash')) defaults.CRASH_AFTER_MS = crashAfterMs;
  if (tags.includes('nostart')) defaults.FAIL_START = '1';
  if (tags.includes('slow')) defaults.START_DELAY_MS = 5000;
  return defaults;
}

function git(args) {
  const r = spawnSync('git', args, { cwd: APP_DIR, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return r.status === 0 ? r.stdout.trim() : null;
}

function buildInfo() {
  let gitSha = process.env.GIT_SHA || git(['rev-parse', 'HEAD']);
  if (!gitSha || !/^[0-9a-f]{7,64}$/i.test(gitSha)) gitSha = 'unknown';
  let epoch = null;
  if (process.env.SOURCE_DATE_EPOCH !== undefined && process.env.SOURCE_DATE_EPOCH !== '') {
    if (!/^\d+$/.test(process.env.SOURCE_DATE_EPOCH)) die('SOURCE_DATE_EPOCH must be an integer (seconds)');
    epoch = Number(process.env.SOURCE_DATE_EPOCH);
  } else if (gitSha !== 'unknown') {
    const ct = git(['log', '-1', '--format=%ct', gitSha]);
    if (ct && /^\d+$/.test(ct)) epoch = Number(ct);
  }
  return { gitSha, builtAt: new Date((epoch || 0) * 1000).toISOString() };
}

function writeFile(file, content) {
  fs.writeFileSync(file, content);
  fs.chmodSync(file, 0o644);
}

function mkdir(dir) {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o755);
}

function copyTree(src, dst) {
  mkdir(dst);
  for (const entry of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, entry.name);
    const d = path.join(dst, entry.name);
    if (entry.isDirectory()) copyTree(s, d);
    else if (entry.isFile()) writeFile(d, fs.readFileSync(s));
  }
}

function run(cmd, args, input) {
  const r = spawnSync(cmd, args, { input, maxBuffer: 256 * 1024 * 1024 });
  if (r.error) die(`${cmd} failed to run: ${r.error.message}`, 1);
  if (r.status !== 0) die(`${cmd} ${args.join(' ')} exited ${r.status}: ${String(r.stderr).trim()}`, 1);
  return r.stdout;
}

function buildOne(version, outDir, info, crashAfterMs) {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'sample-app-stage-'));
  try {
    fs.chmodSync(stage, 0o755);
    const pkg = JSON.parse(fs.readFileSync(path.join(APP_DIR, 'package.json'), 'utf8'));
    const releasePkg = {
      name: pkg.name,
      version,
      description: pkg.description,
      private: true,
      license: pkg.license,
      main: 'server.js',
      scripts: {
        start: 'node server.js',
        worker: 'node worker.js',
        'check-config': 'node server.js --check-config',
      },
      engines: pkg.engines,
    };
    const defaults = defaultsFor(version, crashAfterMs);
    const release = { name: NAME, version, git_sha: info.gitSha, built_at: info.builtAt, defaults };
    writeFile(path.join(stage, 'package.json'), `${JSON.stringify(releasePkg, null, 2)}\n`);
    writeFile(path.join(stage, 'release.json'), `${JSON.stringify(release, null, 2)}\n`);
    for (const f of SHIPPED_FILES) writeFile(path.join(stage, f), fs.readFileSync(path.join(APP_DIR, f)));
    for (const d of SHIPPED_DIRS) copyTree(path.join(APP_DIR, d), path.join(stage, d));

    const entries = ['package.json', 'release.json', ...SHIPPED_FILES, ...SHIPPED_DIRS].sort();
    const tarData = run('tar', [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '--format=gnu',
      '-C',
      stage,
      '-cf',
      '-',
      '--',
      ...entries,
    ]);
    const gz = run('gzip', ['-n', '-9', '-c'], tarData);
    const file = `${NAME}-${version}.tgz`;
    const sha256 = crypto.createHash('sha256').update(gz).digest('hex');
    const target = path.join(outDir, file);
    const tmp = `${target}.tmp-${process.pid}`;
    fs.writeFileSync(tmp, gz);
    fs.chmodSync(tmp, 0o644);
    fs.renameSync(tmp, target);
    writeFile(`${target}.sha256`, `${sha256}  ${file}\n`);
    return { version, file, sha256, defaults };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const outDir = path.resolve(opts.out);
  fs.mkdirSync(outDir, { recursive: true });
  const info = buildInfo();
  const releases = opts.versions.map((v) => buildOne(v, outDir, info, opts.crashAfterMs));
  writeFile(path.join(outDir, 'releases.json'), `${JSON.stringify(releases, null, 2)}\n`);
  for (const r of releases) process.stdout.write(`${r.sha256}  ${path.join(outDir, r.file)}\n`);
}

if (require.main === module) main();

module.exports = { defaultsFor, DEFAULT_VERSIONS };
