'use strict';
// Dependency checks with nothing but node:net.
//
//  * Redis:   TCP connect, optional RESP `AUTH [user] password`, `PING`, expect `+PONG`.
//  * MongoDB: TCP connect, one OP_MSG `{ping: 1, $db: "admin"}` (hand-encoded
//             BSON), read the OP_MSG reply and require `ok == 1`. `ping` needs
//             no authentication on MongoDB, so credentials in the URI are not
//             used (and never sent or printed).
//
// Every check resolves (never rejects) to
//   {status: "ok"|"fail", latency_ms, error?}
// and is bounded by a timeout. Error texts never contain passwords.

const net = require('node:net');
const crypto = require('node:crypto');

const OP_MSG = 2013;
const MAX_REPLY_BYTES = 16 * 1024 * 1024;

function elapsedMs(t0) {
  return Math.round(Number(process.hrtime.bigint() - t0) / 1e5) / 10;
}

function redact(text, secret) {
  let s = String(text);
  if (secret) s = s.split(secret).join('***');
  return s;
}

function clip(s, n = 80) {
  const str = String(s);
  return str.length > n ? `${str.slice(0, n)}...` : str;
}

// One TCP conversation. `start(sock)` runs on connect; `onData(chunk, sock)`
// returns undefined (need more), true (success) or a string (failure reason).
function exchange({ host, port, timeoutMs, budgetMs = timeoutMs, start, onData, secret }) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let finished = false;
    const sock = net.connect({ host, port });
    const finish = (error) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      sock.destroy();
      const result = { status: error ? 'fail' : 'ok', latency_ms: elapsedMs(t0) };
      if (error) result.error = redact(error, secret);
      resolve(result);
    };
    const timer = setTimeout(() => finish(`timeout after ${budgetMs} ms (${host}:${port})`), timeoutMs);
    sock.setNoDelay(true);
    sock.on('connect', () => {
      try {
        start(sock);
      } catch (err) {
        finish(err.message);
      }
    });
    sock.on('data', (chunk) => {
      try {
        const r = onData(chunk, sock);
        if (r === true) finish(null);
        else if (typeof r === 'string') finish(r);
      } catch (err) {
        finish(err.message);
      }
    });
    sock.on('error', (err) => finish(err.message || String(err.code)));
    sock.on('close', () => finish(`connection closed by ${host}:${port} before a complete reply`));
  });
}

// ---------------------------------------------------------------- Redis ---

function encodeRespCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = String(a);
    out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
  }
  return Buffer.from(out, 'utf8');
}

/**
 * @param {{host: string, port: number, username?: string, password?: string}} redis
 * @param {number} timeoutMs
 */
function checkRedis(redis, timeoutMs) {
  const cmds = [];
  if (redis.password) {
    cmds.push({
      name: 'AUTH',
      args: redis.username ? ['AUTH', redis.username, redis.password] : ['AUTH', redis.password],
      expect: '+OK',
    });
  }
  cmds.push({ name: 'PING', args: ['PING'], expect: '+PONG' });
  let i = 0;
  let buf = Buffer.alloc(0);
  return exchange({
    host: redis.host,
    port: redis.port,
    timeoutMs,
    secret: redis.password,
    start: (sock) => sock.write(encodeRespCommand(cmds[0].args)),
    onData: (chunk, sock) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const idx = buf.indexOf('\r\n');
        if (idx === -1) return buf.length > 65536 ? 'redis reply line too long' : undefined;
        const line = buf.subarray(0, idx).toString('utf8');
        buf = buf.subarray(idx + 2);
        const cmd = cmds[i];
        if (line.startsWith('-')) return `redis ${cmd.name} failed: ${clip(line.slice(1))}`;
        if (line !== cmd.expect) return `redis ${cmd.name}: unexpected reply ${JSON.stringify(clip(line, 40))}`;
        i += 1;
        if (i === cmds.length) return true;
        sock.write(encodeRespCommand(cmds[i].args));
      }
    },
  });
}

// ----------------------------------------------------------------- BSON ---

function cstring(s) {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}

// Minimal BSON encoder: int32 and string values are all the ping needs.
function encodeBson(entries) {
  const parts = [];
  for (const [key, value] of entries) {
    if (typeof value === 'number' && Number.isInteger(value) && value >= -(2 ** 31) && value < 2 ** 31) {
      const v = Buffer.alloc(4);
      v.writeInt32LE(value);
      parts.push(Buffer.from([0x10]), cstring(key), v);
    } else if (typeof value === 'string') {
      const str = Buffer.from(value, 'utf8');
      const len = Buffer.alloc(4);
      len.writeInt32LE(str.length + 1);
      parts.push(Buffer.from([0x02]), cstring(key), len, str, Buffer.from([0]));
    } else {
      throw new TypeError(`encodeBson: unsupported value for ${key}`);
    }
  }
  const body = Buffer.concat(parts);
  const size = Buffer.alloc(4);
  size.writeInt32LE(4 + body.length + 1);
  return Buffer.concat([size, body, Buffer.from([0])]);
}

function readCString(buf, pos) {
  const end = buf.indexOf(0, pos);
  if (end === -1) throw new Error('bson: unterminated cstring');
  return [buf.toString('utf8', pos, end), end + 1];
}

// Minimal BSON decoder: decodes common scalar types and nested documents,
// skips the rest. Enough to read `ok` and `errmsg` of a command reply.
function decodeBson(buf, depth = 0) {
  if (depth > 16) throw new Error('bson: nesting too deep');
  if (buf.length < 5) throw new Error('bson: document too short');
  const size = buf.readInt32LE(0);
  if (size < 5 || size > buf.length) throw new Error('bson: bad document size');
  if (buf[size - 1] !== 0) throw new Error('bson: missing terminator');
  const out = {};
  let pos = 4;
  while (pos < size - 1) {
    const type = buf[pos];
    let key;
    [key, pos] = readCString(buf, pos + 1);
    let value;
    switch (type) {
      case 0x01: value = buf.readDoubleLE(pos); pos += 8; break; // double
      case 0x02: case 0x0d: case 0x0e: { // string, js code, symbol
        const len = buf.readInt32LE(pos);
        if (len < 1 || pos + 4 + len > size) throw new Error('bson: bad string length');
        value = buf.toString('utf8', pos + 4, pos + 4 + len - 1);
        pos += 4 + len;
        break;
      }
      case 0x03: case 0x04: { // document, array
        const len = buf.readInt32LE(pos);
        if (len < 5 || pos + len > size) throw new Error('bson: bad subdocument length');
        value = decodeBson(buf.subarray(pos, pos + len), depth + 1);
        pos += len;
        break;
      }
      case 0x05: { // binary
        const len = buf.readInt32LE(pos);
        if (len < 0 || pos + 5 + len > size) throw new Error('bson: bad binary length');
        value = buf.subarray(pos + 5, pos + 5 + len);
        pos += 5 + len;
        break;
      }
      case 0x06: case 0x0a: case 0x7f: case 0xff: value = null; break; // undefined, null, max/min key
      case 0x07: value = buf.toString('hex', pos, pos + 12); pos += 12; break; // ObjectId
      case 0x08: value = buf[pos] === 1; pos += 1; break; // bool
      case 0x09: value = new Date(Number(buf.readBigInt64LE(pos))); pos += 8; break; // datetime
      case 0x0b: { // regex: two cstrings
        let pattern;
        let flags;
        [pattern, pos] = readCString(buf, pos);
        [flags, pos] = readCString(buf, pos);
        value = `/${pattern}/${flags}`;
        break;
      }
      case 0x0c: { // DBPointer: string + 12 bytes
        const len = buf.readInt32LE(pos);
        pos += 4 + len + 12;
        value = null;
        break;
      }
      case 0x0f: { // code with scope: total int32
        const len = buf.readInt32LE(pos);
        pos += len;
        value = null;
        break;
      }
      case 0x10: value = buf.readInt32LE(pos); pos += 4; break; // int32
      case 0x11: value = buf.readBigUInt64LE(pos); pos += 8; break; // timestamp
      case 0x12: value = Number(buf.readBigInt64LE(pos)); pos += 8; break; // int64
      case 0x13: value = buf.subarray(pos, pos + 16); pos += 16; break; // decimal128
      default:
        throw new Error(`bson: unsupported element type 0x${type.toString(16)}`);
    }
    if (pos > size - 1) throw new Error('bson: element overruns document');
    out[key] = value;
  }
  return out;
}

// --------------------------------------------------------------- OP_MSG ---

let nextRequestId = crypto.randomInt(1, 2 ** 30);

function encodeOpMsg(requestId, doc) {
  const header = Buffer.alloc(21);
  const len = 16 + 4 + 1 + doc.length;
  header.writeInt32LE(len, 0); // messageLength
  header.writeInt32LE(requestId, 4); // requestID
  header.writeInt32LE(0, 8); // responseTo
  header.writeInt32LE(OP_MSG, 12); // opCode
  header.writeUInt32LE(0, 16); // flagBits
  header[20] = 0; // section kind 0: body
  return Buffer.concat([header, doc]);
}

function encodePing(requestId) {
  return encodeOpMsg(requestId, encodeBson([['ping', 1], ['$db', 'admin']]));
}

// Parse one complete OP_MSG message; returns the body document.
function parseOpMsg(buf) {
  if (buf.length < 21) throw new Error('mongodb: reply too short');
  const len = buf.readInt32LE(0);
  const opCode = buf.readInt32LE(12);
  if (opCode !== OP_MSG) throw new Error(`mongodb: unexpected opCode ${opCode} (OP_MSG needs MongoDB >= 3.6)`);
  const flags = buf.readUInt32LE(16);
  const end = flags & 1 ? len - 4 : len; // checksumPresent
  let pos = 20;
  let body = null;
  while (pos < end) {
    const kind = buf[pos];
    pos += 1;
    const size = buf.readInt32LE(pos);
    if (size < 5 || pos + size > end) throw new Error('mongodb: bad section size');
    if (kind === 0) body = decodeBson(buf.subarray(pos, pos + size));
    else if (kind !== 1) throw new Error(`mongodb: unknown section kind ${kind}`);
    pos += size;
  }
  if (!body) throw new Error('mongodb: reply has no body section');
  return body;
}

function pingMongoHost(host, port, timeoutMs, budgetMs) {
  const requestId = nextRequestId;
  nextRequestId = nextRequestId >= 2 ** 31 - 2 ? 1 : nextRequestId + 1;
  let buf = Buffer.alloc(0);
  return exchange({
    host,
    port,
    timeoutMs,
    budgetMs,
    start: (sock) => sock.write(encodePing(requestId)),
    onData: (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (buf.length < 4) return undefined;
      const len = buf.readInt32LE(0);
      if (len < 21 || len > MAX_REPLY_BYTES) return `mongodb: invalid reply length ${len}`;
      if (buf.length < len) return undefined;
      const msg = buf.subarray(0, len);
      const responseTo = msg.readInt32LE(8);
      if (responseTo !== requestId) return `mongodb: reply is for request ${responseTo}, expected ${requestId}`;
      const body = parseOpMsg(msg);
      if (Number(body.ok) === 1) return true;
      const why = body.errmsg ? `: ${clip(body.errmsg)}` : '';
      return `mongodb ping returned ok=${JSON.stringify(body.ok === undefined ? null : body.ok)}${why}`;
    },
  });
}

/**
 * Ping the hosts of a MongoDB URI in order; the first success wins.
 * @param {{hosts: {host: string, port: number}[]}} mongodb
 */
async function checkMongo(mongodb, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  const t0 = process.hrtime.bigint();
  const errors = [];
  for (const { host, port } of mongodb.hosts) {
    const left = deadline - Date.now();
    if (left <= 0) {
      errors.push(`timeout after ${timeoutMs} ms`);
      break;
    }
    const r = await pingMongoHost(host, port, left, timeoutMs);
    if (r.status === 'ok') return { status: 'ok', latency_ms: elapsedMs(t0) };
    errors.push(r.error);
  }
  return { status: 'fail', latency_ms: elapsedMs(t0), error: errors.join('; ') };
}

/**
 * Run every configured dependency check concurrently.
 * Returns {checks, failedRequired: string[]} where each check is
 * {status: ok|fail|skipped, required, latency_ms?, error?}.
 */
async function runChecks(config) {
  const t = config.depTimeoutMs;
  const [mongodb, redis] = await Promise.all([
    config.mongodb ? checkMongo(config.mongodb, t) : { status: 'skipped' },
    config.redis ? checkRedis(config.redis, t) : { status: 'skipped' },
  ]);
  const checks = {
    mongodb: { ...mongodb, required: config.requireMongodb },
    redis: { ...redis, required: config.requireRedis },
  };
  const failedRequired = Object.entries(checks)
    .filter(([, c]) => c.status === 'fail' && c.required)
    .map(([name]) => name);
  return { checks, failedRequired };
}

module.exports = {
  checkMongo,
  checkRedis,
  decodeBson,
  encodeBson,
  encodePing,
  encodeRespCommand,
  parseOpMsg,
  runChecks,
};
