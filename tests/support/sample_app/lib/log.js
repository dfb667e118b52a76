'use strict';
// One JSON object per line. Info goes to stdout, errors to stderr (PM2 keeps
// them in separate log files). Never pass secrets in `fields`.

function createLogger(base = {}) {
  return function log(event, fields = {}, level = 'info') {
    const line = JSON.stringify({
      ts: new Date().toISOString(),
      level,
      event,
      ...base,
      pid: process.pid,
      ...fields,
    });
    (level === 'error' ? process.stderr : process.stdout).write(`${line}\n`);
  };
}

module.exports = { createLogger };
