'use strict';
// Graceful shutdown shared by server.js and worker.js.
//
// Triggers: SIGINT (what PM2 sends), SIGTERM (systemd, docker, kill) and the
// 'shutdown' IPC message PM2 sends when `shutdown_with_message` is enabled.
// A second trigger while draining is logged and ignored; PM2 escalates to
// SIGKILL after its kill_timeout, so keep kill_timeout > SHUTDOWN_TIMEOUT_MS.

const net = require('node:net');

/**
 * @param {object} opts
 * @param {(reason: string) => void} opts.begin  start draining (called once)
 * @param {(event: string, fields?: object, level?: string) => void} opts.log
 */
function installShutdownTriggers({ begin, log }) {
  let triggered = false;
  const trigger = (reason) => {
    if (triggered) {
      log('shutdown_repeat_ignored', { reason });
      return;
    }
    triggered = true;
    begin(reason);
  };
  process.on('SIGINT', () => trigger('SIGINT'));
  process.on('SIGTERM', () => trigger('SIGTERM'));
  process.on('message', (msg) => {
    if (msg === 'shutdown' || (msg && msg.type === 'shutdown')) trigger('message:shutdown');
  });
  return trigger;
}

/**
 * Drain an http.Server: stop accepting, let in-flight requests finish (their
 * responses carry `Connection: close`, which the request handler adds while
 * draining), close idle keep-alive sockets, then exit 0. Exit 1 if requests
 * are still running after `timeoutMs`.
 *
 * Idle keep-alive sockets are closed after `idleGraceMs` (0 = at once, like
 * http.Server#close() does since Node 19). Closing them at once races with
 * clients that are just reusing them: the request is already on the wire when
 * the socket is destroyed and the client sees ECONNRESET (measured: ~20 resets
 * per `pm2 reload` of 2 cluster instances under a busy keep-alive client; 0
 * with a 1 s grace). During the grace every request that still arrives on a
 * kept-alive socket is answered with `Connection: close`, so busy clients move
 * off the old process cleanly; only sockets that stayed idle are closed.
 */
const EXIT_LINGER_MS = 250;

function drainHttpServer({ server, timeoutMs, idleGraceMs = 0, log, inFlight, exit = process.exit }) {
  const t0 = Date.now();
  const grace = Math.max(0, Math.min(idleGraceMs, Math.floor(timeoutMs / 2)));
  const timer = setTimeout(() => {
    log('shutdown_timeout', { timeout_ms: timeoutMs, in_flight: inFlight() }, 'error');
    exit(1);
  }, timeoutMs);
  // net.Server#close: stop listening now, call back once every connection is
  // gone. (http.Server#close would also destroy idle sockets immediately.)
  net.Server.prototype.close.call(server, () => {
    clearTimeout(timer);
    log('shutdown_end', { drained_ms: Date.now() - t0, exit_code: 0 });
    // Linger briefly: under PM2 cluster mode the master may have handed this
    // worker a connection just before close(); exiting at once leaves that
    // client hanging until its timeout (seen ~1 in 150k requests at full load).
    setTimeout(() => exit(0), EXIT_LINGER_MS);
  });
  const closeIdle = () => {
    server.closeIdleConnections();
    log('shutdown_idle_closed', { after_ms: Date.now() - t0, in_flight: inFlight() });
  };
  if (grace > 0) setTimeout(closeIdle, grace).unref();
  else server.closeIdleConnections();
  // Logged after close(): from here on new connections are refused.
  log('shutdown_begin', { timeout_ms: timeoutMs, idle_grace_ms: grace, in_flight: inFlight() });
}

module.exports = { drainHttpServer, installShutdownTriggers };
