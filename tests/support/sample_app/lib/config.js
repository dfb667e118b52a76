'use strict';
// Environment validation shared by server.js and worker.js.
//
// loadConfig() never throws and never prints: it returns {config, errors}
// where every error is one self-contained sentence that names the offending
// key and what was expected. Secret values (SESSION_SECRET, passwords inside
// MONGODB_URI / REDIS_URL) are never copied into an error message.

const fs = require('node:fs');
const path = require('node:path');
const { readRelease } = require('./release');

const APP_ROOT = path.resolve(__dirname, '..');
const EX_CONFIG = 78;
const APP_ENVS = ['lab', 'development', 'staging', 'production'];
const MAX_SLEEP_MS = 24 * 60 * 60 * 1000;

// Keys that are required per entry point. Everything else is optional.
const REQUIRED = {
  server: ['PORT', 'APP_ENV'],
  worker: ['APP_ENV'],
};

// Failure switches: read from env, falling back to release.json "defaults".
const SWITCHES = {
  FAIL_HEALTH: 'bool',
  FAIL_START: 'bool',
  CRASH_AFTER_MS: 'ms',
  START_DELAY_MS: 'ms',
  READY_DELAY_MS: 'ms',
};

function isSet(v) {
  return v !== undefined && v !== null && String(v) !== '';
}

// Quote a (non-secret) user supplied value for an error message.
function show(v) {
  let s = String(v);
  if (s.length > 64) s = `${s.slice(0, 64)}...`;
  return JSON.stringify(s);
}

function parseIntStrict(raw, min, max) {
  const s = String(raw).trim();
  if (!/^\d+$/.test(s)) return null;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < min || n > max) return null;
  return n;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off']);
function parseBool(raw) {
  const s = String(raw).trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  return null;
}

function splitHostPort(spec, defaultPort) {
  // host, host:port, [v6], [v6]:port
  let host;
  let portStr;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(spec);
  if (v6) {
    host = v6[1];
    portStr = v6[2];
  } else {
    const idx = spec.lastIndexOf(':');
    if (idx === -1) {
      host = spec;
    } else {
      host = spec.slice(0, idx);
      portStr = spec.slice(idx + 1);
    }
  }
  if (!host || /[\s/@]/.test(host)) return null;
  let port = defaultPort;
  if (portStr !== undefined) {
    port = parseIntStrict(portStr, 1, 65535);
    if (port === null) return null;
  }
  return { host, port };
}

function fmtHost(h) {
  return h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`;
}

function safeDecode(s) {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

// mongodb://[user[:password]@]host[:port][,host[:port]...][/db][?options]
function parseMongoUri(raw) {
  const expected = 'expected mongodb://[user:password@]host:port[/db]';
  const s = String(raw).trim();
  if (/^mongodb\+srv:/i.test(s)) {
    return { error: `MONGODB_URI: mongodb+srv:// is not supported (no DNS SRV lookup), ${expected}` };
  }
  const m = /^mongodb:\/\/(?:([^/?#]*)@)?([^/?#@]+)(\/[^?#]*)?(\?[^#]*)?$/i.exec(s);
  if (!m) return { error: `MONGODB_URI is not a valid MongoDB URI, ${expected}` };
  const [, userinfo, hostlist, dbPath] = m;
  const hosts = [];
  for (const part of hostlist.split(',')) {
    const hp = splitHostPort(part, 27017);
    if (!hp) return { error: `MONGODB_URI has an invalid host or port, ${expected}` };
    hosts.push(hp);
  }
  let hasPassword = false;
  let username = '';
  if (userinfo !== undefined) {
    const idx = userinfo.indexOf(':');
    const u = safeDecode(idx === -1 ? userinfo : userinfo.slice(0, idx));
    if (u === null) return { error: 'MONGODB_URI has invalid percent-encoding in its credentials' };
    username = u;
    hasPassword = idx !== -1;
  }
  const db = dbPath && dbPath.length > 1 ? dbPath.slice(1) : '';
  const cred = userinfo === undefined ? '' : `${encodeURIComponent(username)}${hasPassword ? ':***' : ''}@`;
  const redacted = `mongodb://${cred}${hosts.map(fmtHost).join(',')}${db ? `/${db}` : '/'}`;
  return { value: { hosts, username, db, redacted } };
}

// redis://[[user]:password@]host[:port][/db]
function parseRedisUrl(raw) {
  const expected = 'expected redis://[:password@]host:port[/db]';
  const s = String(raw).trim();
  if (/^rediss:/i.test(s)) return { error: `REDIS_URL: rediss:// (TLS) is not supported, ${expected}` };
  let u;
  try {
    u = new URL(s);
  } catch {
    return { error: `REDIS_URL is not a valid URL, ${expected}` };
  }
  if (u.protocol !== 'redis:') return { error: `REDIS_URL must use the redis:// scheme, ${expected}` };
  let host = u.hostname;
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (!host) return { error: `REDIS_URL has no host, ${expected}` };
  let port = 6379;
  if (u.port !== '') {
    port = parseIntStrict(u.port, 1, 65535);
    if (port === null) return { error: `REDIS_URL has an invalid port, ${expected}` };
  }
  const username = safeDecode(u.username);
  const password = safeDecode(u.password);
  if (username === null || password === null) {
    return { error: 'REDIS_URL has invalid percent-encoding in its credentials' };
  }
  let db = 0;
  const p = u.pathname.replace(/^\//, '');
  if (p !== '') {
    db = parseIntStrict(p, 0, 1_000_000);
    if (db === null) return { error: `REDIS_URL database must be a number (redis://host:port/0), ${expected}` };
  }
  const cred = password ? `${username ? encodeURIComponent(username) : ''}:***@` : username ? `${encodeURIComponent(username)}@` : '';
  const redacted = `redis://${cred}${fmtHost({ host, port })}/${db}`;
  return { value: { host, port, username, password, db, redacted } };
}

function readPackageVersion(appRoot) {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(appRoot, 'package.json'), 'utf8'));
    if (pkg && typeof pkg.version === 'string' && pkg.version) return pkg.version;
  } catch {
    // fall through
  }
  return '0.0.0-unknown';
}

/**
 * Validate the environment for one entry point.
 * @param {object} [opts]
 * @param {object} [opts.env] environment (default process.env)
 * @param {'server'|'worker'} [opts.role]
 * @param {string} [opts.appRoot] directory holding package.json / release.json
 * @returns {{config: object|null, errors: string[]}}
 */
function loadConfig({ env = process.env, role = 'server', appRoot = APP_ROOT } = {}) {
  const errors = [];
  const required = new Set(REQUIRED[role] || REQUIRED.server);

  const { release, error: releaseError } = readRelease(appRoot);
  if (releaseError) errors.push(releaseError);

  // --- PORT ---------------------------------------------------------------
  let port = null;
  if (!isSet(env.PORT)) {
    if (required.has('PORT')) errors.push('PORT is required (integer 1-65535)');
  } else {
    port = parseIntStrict(env.PORT, 1, 65535);
    if (port === null) errors.push(`PORT must be an integer 1-65535, got ${show(env.PORT)}`);
  }

  // --- APP_ENV ------------------------------------------------------------
  let appEnv = null;
  if (!isSet(env.APP_ENV)) {
    errors.push(`APP_ENV is required (one of ${APP_ENVS.join(', ')})`);
  } else if (!APP_ENVS.includes(env.APP_ENV)) {
    errors.push(`APP_ENV must be one of ${APP_ENVS.join(', ')}, got ${show(env.APP_ENV)}`);
  } else {
    appEnv = env.APP_ENV;
  }

  // --- HOST ---------------------------------------------------------------
  let host = '127.0.0.1';
  if (isSet(env.HOST)) {
    if (/^[A-Za-z0-9.:_-]{1,253}$/.test(env.HOST)) host = env.HOST;
    else errors.push(`HOST must be an IP address or host name, got ${show(env.HOST)}`);
  }

  // --- APP_VERSION --------------------------------------------------------
  let version = readPackageVersion(appRoot);
  if (isSet(env.APP_VERSION)) {
    if (/^[\x21-\x7e]{1,128}$/.test(env.APP_VERSION)) version = env.APP_VERSION;
    else errors.push(`APP_VERSION must be 1-128 printable characters without spaces, got ${show(env.APP_VERSION)}`);
  }

  // --- integer knobs ------------------------------------------------------
  function intKey(key, def, min, max) {
    if (!isSet(env[key])) return def;
    const n = parseIntStrict(env[key], min, max);
    if (n === null) {
      errors.push(`${key} must be an integer ${min}-${max}, got ${show(env[key])}`);
      return def;
    }
    return n;
  }
  const shutdownTimeoutMs = intKey('SHUTDOWN_TIMEOUT_MS', 10000, 1, MAX_SLEEP_MS);
  const shutdownIdleGraceMs = intKey('SHUTDOWN_IDLE_GRACE_MS', 1000, 0, MAX_SLEEP_MS);
  const depTimeoutMs = intKey('DEP_TIMEOUT_MS', 1000, 1, 600000);
  const workerIntervalMs = intKey('WORKER_INTERVAL_MS', 5000, 10, MAX_SLEEP_MS);
  const slowMaxMs = intKey('SLOW_MAX_MS', 120000, 0, MAX_SLEEP_MS);

  // --- dependencies -------------------------------------------------------
  let mongodb = null;
  if (isSet(env.MONGODB_URI)) {
    const r = parseMongoUri(env.MONGODB_URI);
    if (r.error) errors.push(r.error);
    else mongodb = r.value;
  }
  let redis = null;
  if (isSet(env.REDIS_URL)) {
    const r = parseRedisUrl(env.REDIS_URL);
    if (r.error) errors.push(r.error);
    else redis = r.value;
  }
  function boolKey(key, def) {
    if (!isSet(env[key])) return def;
    const b = parseBool(env[key]);
    if (b === null) {
      errors.push(`${key} must be true or false, got ${show(env[key])}`);
      return def;
    }
    return b;
  }
  const requireMongodb = boolKey('HEALTH_REQUIRE_MONGODB', true);
  const requireRedis = boolKey('HEALTH_REQUIRE_REDIS', true);

  // --- SESSION_SECRET (value never echoed) --------------------------------
  const sessionSecret = isSet(env.SESSION_SECRET) ? String(env.SESSION_SECRET) : null;
  if (appEnv === 'production') {
    if (sessionSecret === null) {
      errors.push('SESSION_SECRET is required when APP_ENV=production (at least 16 characters)');
    } else if (sessionSecret.length < 16) {
      errors.push(
        `SESSION_SECRET must be at least 16 characters when APP_ENV=production (got ${sessionSecret.length} characters)`,
      );
    }
  }

  // --- failure switches: env overrides release.json defaults --------------
  const releaseDefaults = (release && release.defaults) || {};
  const switches = {};
  const switchSources = {};
  for (const [key, kind] of Object.entries(SWITCHES)) {
    let raw;
    let source;
    if (isSet(env[key])) {
      raw = env[key];
      source = 'env';
    } else if (isSet(releaseDefaults[key])) {
      raw = releaseDefaults[key];
      if (raw === true) raw = '1';
      if (raw === false) raw = '0';
      source = 'release.json';
    } else {
      switches[key] = kind === 'bool' ? false : 0;
      continue;
    }
    const where = source === 'env' ? key : `${key} (from release.json defaults)`;
    if (kind === 'bool') {
      const b = parseBool(raw);
      if (b === null) errors.push(`${where} must be 1/0 or true/false, got ${show(raw)}`);
      switches[key] = Boolean(b);
    } else {
      const n = parseIntStrict(raw, 0, MAX_SLEEP_MS);
      if (n === null) errors.push(`${where} must be an integer 0-${MAX_SLEEP_MS} (0 = off), got ${show(raw)}`);
      switches[key] = n || 0;
    }
    if (switches[key]) switchSources[key] = source;
  }

  if (errors.length) return { config: null, errors };

  return {
    errors,
    config: {
      role,
      appRoot,
      appEnv,
      port,
      host,
      version,
      shutdownTimeoutMs,
      shutdownIdleGraceMs,
      depTimeoutMs,
      workerIntervalMs,
      slowMaxMs,
      mongodb,
      redis,
      requireMongodb,
      requireRedis,
      sessionSecret,
      release,
      failHealth: switches.FAIL_HEALTH,
      failStart: switches.FAIL_START,
      crashAfterMs: switches.CRASH_AFTER_MS,
      startDelayMs: switches.START_DELAY_MS,
      readyDelayMs: switches.READY_DELAY_MS,
      switchSources,
    },
  };
}

// A log-safe view of the configuration (no secrets).
function describeConfig(config) {
  return {
    role: config.role,
    app_env: config.appEnv,
    host: config.role === 'server' ? config.host : undefined,
    port: config.port === null ? undefined : config.port,
    version: config.version,
    mongodb: config.mongodb ? config.mongodb.redacted : null,
    redis: config.redis ? config.redis.redacted : null,
    health_require_mongodb: config.requireMongodb,
    health_require_redis: config.requireRedis,
    session_secret: config.sessionSecret === null ? 'unset' : 'set',
    failure_switches: config.switchSources,
  };
}

module.exports = {
  APP_ENVS,
  APP_ROOT,
  EX_CONFIG,
  REQUIRED,
  SWITCHES,
  describeConfig,
  loadConfig,
  parseBool,
  parseIntStrict,
  parseMongoUri,
  parseRedisUrl,
};
