'use strict';
// nodeops-sample-app HTTP API. See README.md for endpoints, env and switches.

const http = require('node:http');
const { loadConfig, describeConfig, parseIntStrict, EX_CONFIG } = require('./lib/config');
const { runChecks } = require('./lib/deps');
const { createLogger } = require('./lib/log');
const { drainHttpServer, installShutdownTriggers } = require('./lib/shutdown');

const EX_USAGE = 64;
// Longer than nginx's upstream keepalive_timeout (60s) so that nginx, not the
// app, is the side that closes idle upstream connections.
const KEEP_ALIVE_TIMEOUT_MS = 65000;
const HEADERS_TIMEOUT_MS = 66000;

const ROUTES = {
  '/': ['GET', 'HEAD'],
  '/health': ['GET', 'HEAD'],
  '/ready': ['GET', 'HEAD'],
  '/version': ['GET', 'HEAD'],
  '/slow': ['GET', 'HEAD'],
  '/echo': ['POST', 'PUT'],
};

function startServer(config) {
  const log = createLogger({ app: 'nodeops-sample-app', role: 'server', version: config.version });
  const state = { phase: 'starting', inFlight: 0, timers: new Set() };
  const isDraining = () => state.phase === 'draining';

  function later(fn, ms) {
    const t = setTimeout(() => {
      state.timers.delete(t);
      fn();
    }, ms);
    state.timers.add(t);
    return t;
  }

  function send(res, status, body, extraHeaders = {}) {
    const payload = `${JSON.stringify(body)}\n`;
    res.statusCode = status;
    for (const [k, v] of Object.entries(extraHeaders)) res.setHeader(k, v);
    if (isDraining()) res.setHeader('Connection', 'close');
    res.setHeader('Content-Type', 'application/json');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('Content-Length', Buffer.byteLength(payload));
    res.end(payload);
  }

  async function health(req, res) {
    const { checks, failedRequired } = await runChecks(config);
    let status = 'ok';
    let reason;
    if (config.failHealth) {
      status = 'fail';
      reason = 'forced unhealthy';
    } else if (failedRequired.length) {
      status = 'fail';
      reason = `required dependency failed: ${failedRequired.join(', ')}`;
    }
    const body = {
      status,
      version: config.version,
      pid: process.pid,
      uptime_s: Math.round(process.uptime() * 1000) / 1000,
      app_env: config.appEnv,
      checks,
    };
    if (reason) body.reason = reason;
    send(res, status === 'ok' ? 200 : 503, body);
  }

  function slow(req, res, url) {
    const raw = url.searchParams.get('ms') ?? '1000';
    const ms = parseIntStrict(raw, 0, Number.MAX_SAFE_INTEGER);
    if (ms === null) {
      send(res, 400, { error: 'ms must be a non-negative integer', max_ms: config.slowMaxMs });
      return;
    }
    const sleep = Math.min(ms, config.slowMaxMs);
    const t = setTimeout(() => send(res, 200, { slept_ms: sleep, pid: process.pid }), sleep);
    res.on('close', () => clearTimeout(t));
  }

  function echo(req, res) {
    let bytes = 0;
    req.on('data', (chunk) => {
      bytes += chunk.length;
    });
    req.on('end', () => send(res, 200, { bytes, pid: process.pid }));
    req.on('error', () => {});
  }

  async function route(req, res, url) {
    const path = url.pathname;
    const allowed = ROUTES[path];
    if (!allowed) {
      send(res, 404, { error: 'not found', path });
      return;
    }
    if (!allowed.includes(req.method)) {
      send(res, 405, { error: 'method not allowed', allow: allowed }, { Allow: allowed.join(', ') });
      return;
    }
    switch (path) {
      case '/':
        send(res, 200, {
          message: 'hello from nodeops-sample-app',
          version: config.version,
          app_env: config.appEnv,
          pid: process.pid,
        });
        return;
      case '/health':
        await health(req, res);
        return;
      case '/ready':
        if (state.phase === 'ready') send(res, 200, { ready: true, pid: process.pid });
        else send(res, 503, { ready: false, state: state.phase, pid: process.pid });
        return;
      case '/version':
        send(res, 200, { version: config.version, pid: process.pid, node: process.version });
        return;
      case '/slow':
        slow(req, res, url);
        return;
      case '/echo':
        echo(req, res);
        return;
      default:
        send(res, 404, { error: 'not found', path });
    }
  }

  const server = http.createServer((req, res) => {
    const t0 = process.hrtime.bigint();
    state.inFlight += 1;
    let url;
    try {
      // Prefix instead of a base URL so that "//x" stays a path, not a host.
      url = new URL(`http://localhost${req.url.startsWith('/') ? '' : '/'}${req.url}`);
    } catch {
      url = new URL('http://localhost/');
    }
    const requestId = req.headers['x-request-id'];
    res.setHeader('X-App-Version', config.version);
    if (requestId) res.setHeader('X-Request-Id', requestId);
    res.on('close', () => {
      state.inFlight -= 1;
      const entry = {
        method: req.method,
        path: url.pathname,
        status: res.statusCode,
        ms: Math.round(Number(process.hrtime.bigint() - t0) / 1e5) / 10,
      };
      if (requestId) entry.request_id = requestId;
      if (!res.writableFinished) entry.aborted = true;
      log('request', entry);
    });
    route(req, res, url).catch((err) => {
      log('request_error', { path: url.pathname, error: err && err.message }, 'error');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
      else res.destroy();
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;

  server.on('error', (err) => {
    log('listen_error', { host: config.host, port: config.port, code: err.code, error: err.message }, 'error');
    process.exit(1);
  });

  function becomeReady() {
    if (state.phase !== 'starting') return;
    state.phase = 'ready';
    log('ready', { host: config.host, port: config.port });
    if (typeof process.send === 'function') {
      try {
        process.send('ready'); // PM2 wait_ready
      } catch (err) {
        log('ipc_error', { error: err.message }, 'error');
      }
    }
    if (config.crashAfterMs > 0) {
      log('crash_scheduled', { crash_after_ms: config.crashAfterMs, source: config.switchSources.CRASH_AFTER_MS });
      later(() => {
        log('crash', { reason: 'CRASH_AFTER_MS', crash_after_ms: config.crashAfterMs }, 'error');
        process.exit(1);
      }, config.crashAfterMs);
    }
  }

  function listen() {
    server.listen(config.port, config.host, () => {
      const addr = server.address();
      log('listening', { host: addr.address, port: addr.port, keep_alive_timeout_ms: server.keepAliveTimeout });
      if (config.readyDelayMs > 0) later(becomeReady, config.readyDelayMs);
      else becomeReady();
    });
  }

  installShutdownTriggers({
    log,
    begin(reason) {
      const wasListening = server.listening;
      state.phase = 'draining';
      for (const t of state.timers) clearTimeout(t); // no late 'ready', no crash while draining
      state.timers.clear();
      log('shutdown_signal', { reason, listening: wasListening });
      if (!wasListening) {
        log('shutdown_end', { drained_ms: 0, exit_code: 0 });
        process.exit(0);
      }
      drainHttpServer({
        server,
        timeoutMs: config.shutdownTimeoutMs,
        idleGraceMs: config.shutdownIdleGraceMs,
        log,
        inFlight: () => state.inFlight,
      });
    },
  });

  log('starting', {
    node: process.version,
    config: describeConfig(config),
    start_delay_ms: config.startDelayMs,
    ready_delay_ms: config.readyDelayMs,
    fail_health: config.failHealth,
  });
  if (config.startDelayMs > 0) later(listen, config.startDelayMs);
  else listen();
  return server;
}

// Exit with `code` without starting. Under PM2 the IPC channel to the daemon
// keeps Node alive even with nothing else to do, so drop it as well.
function endEarly(code) {
  process.exitCode = code;
  if (process.connected) process.disconnect();
}

function main(argv = process.argv.slice(2), env = process.env) {
  const unknown = argv.filter((a) => a !== '--check-config');
  if (unknown.length) {
    process.stderr.write(`usage: node server.js [--check-config] (unknown argument ${JSON.stringify(unknown[0])})\n`);
    endEarly(EX_USAGE);
    return null;
  }
  const { config, errors } = loadConfig({ env, role: 'server' });
  if (errors.length) {
    for (const e of errors) process.stderr.write(`config error: ${e}\n`);
    endEarly(EX_CONFIG);
    return null;
  }
  if (argv.includes('--check-config')) {
    process.stdout.write(`config ok: ${JSON.stringify(describeConfig(config))}\n`);
    process.exitCode = 0;
    return null;
  }
  if (config.failStart) {
    const src = config.switchSources.FAIL_START;
    process.stderr.write(`fatal: FAIL_START is set (${src}): refusing to start, simulated broken release ${config.version}\n`);
    endEarly(1);
    return null;
  }
  return startServer(config);
}

// PM2 loads the script with Module._load(script, null, true), which makes it
// require.main; the pm_id check is a belt-and-braces fallback for loaders that don't.
if (require.main === module || process.env.pm_id !== undefined) main();

module.exports = { main, startServer };
