'use strict';
// nodeops-sample-app background worker (PM2 fork mode).
//
// Same configuration module as the API, but only APP_ENV is required (PORT is
// validated if present). Every WORKER_INTERVAL_MS it runs one "job": it logs a
// heartbeat line and, when REDIS_URL is set, pings Redis. On SIGINT/SIGTERM or
// the PM2 'shutdown' message it lets the current tick finish and exits 0.
// Honours FAIL_START, START_DELAY_MS (+READY_DELAY_MS) and CRASH_AFTER_MS like
// the API so that a bad release is bad for the worker too; FAIL_HEALTH does
// not apply (the worker has no health endpoint).

const { loadConfig, describeConfig, EX_CONFIG } = require('./lib/config');
const { checkRedis } = require('./lib/deps');
const { createLogger } = require('./lib/log');
const { installShutdownTriggers } = require('./lib/shutdown');

const EX_USAGE = 64;

function startWorker(config) {
  const log = createLogger({ app: 'nodeops-sample-app', role: 'worker', version: config.version });
  const timers = new Set();
  let stopping = false;
  let ready = false;
  let ticks = 0;
  let current = null; // promise of the tick in progress
  let nextTick = null;

  function later(fn, ms) {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  }

  async function job() {
    ticks += 1;
    const entry = { tick: ticks };
    if (config.redis) {
      const r = await checkRedis(config.redis, config.depTimeoutMs);
      entry.redis = r.status;
      entry.redis_latency_ms = r.latency_ms;
      if (r.error) entry.redis_error = r.error;
    }
    log('heartbeat', entry);
  }

  async function loop() {
    nextTick = null;
    current = job();
    try {
      await current;
    } catch (err) {
      log('job_error', { error: err && err.message }, 'error');
    } finally {
      current = null;
    }
    if (!stopping) nextTick = setTimeout(loop, config.workerIntervalMs);
  }

  function becomeReady() {
    ready = true;
    log('ready', { interval_ms: config.workerIntervalMs });
    if (typeof process.send === 'function') {
      try {
        process.send('ready');
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
    loop();
  }

  installShutdownTriggers({
    log,
    async begin(reason) {
      stopping = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      if (nextTick) clearTimeout(nextTick);
      log('shutdown_begin', { reason, ready, tick_in_progress: current !== null, timeout_ms: config.shutdownTimeoutMs });
      const killer = setTimeout(() => {
        log('shutdown_timeout', { timeout_ms: config.shutdownTimeoutMs }, 'error');
        process.exit(1);
      }, config.shutdownTimeoutMs);
      if (current) await current.catch(() => {});
      clearTimeout(killer);
      log('shutdown_end', { ticks, exit_code: 0 });
      process.exit(0);
    },
  });

  log('starting', { node: process.version, config: describeConfig(config) });
  const delay = config.startDelayMs + config.readyDelayMs;
  if (delay > 0) later(becomeReady, delay);
  else becomeReady();
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
    process.stderr.write(`usage: node worker.js [--check-config] (unknown argument ${JSON.stringify(unknown[0])})\n`);
    endEarly(EX_USAGE);
    return;
  }
  const { config, errors } = loadConfig({ env, role: 'worker' });
  if (errors.length) {
    for (const e of errors) process.stderr.write(`config error: ${e}\n`);
    endEarly(EX_CONFIG);
    return;
  }
  if (argv.includes('--check-config')) {
    process.stdout.write(`config ok: ${JSON.stringify(describeConfig(config))}\n`);
    return;
  }
  if (config.failStart) {
    process.stderr.write(`fatal: FAIL_START is set (${config.switchSources.FAIL_START}): refusing to start, simulated broken release ${config.version}\n`);
    endEarly(1);
    return;
  }
  startWorker(config);
}

// See server.js for why pm_id is checked as well.
if (require.main === module || process.env.pm_id !== undefined) main();

module.exports = { main, startWorker };
