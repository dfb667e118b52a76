'use strict';
// Tiny fake dependency servers on 127.0.0.1 for the health-check tests.
// The fake MongoDB decodes the request with its own BSON reader (independent
// of lib/deps.js) so that a wrongly encoded OP_MSG makes the tests fail.

const net = require('node:net');

function listen(server) {
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

function closer(server, sockets) {
  return () =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
}

// --------------------------------------------------------------- Redis ----

/** Parse complete RESP arrays of bulk strings from buf; returns [commands, rest]. */
function parseResp(buf) {
  const cmds = [];
  let pos = 0;
  for (;;) {
    const start = pos;
    const nl = buf.indexOf('\r\n', pos);
    if (nl === -1 || buf[pos] !== 0x2a /* '*' */) return [cmds, buf.subarray(start)];
    const n = Number(buf.toString('latin1', pos + 1, nl));
    pos = nl + 2;
    const args = [];
    for (let i = 0; i < n; i += 1) {
      const nl2 = buf.indexOf('\r\n', pos);
      if (nl2 === -1 || buf[pos] !== 0x24 /* '$' */) return [cmds, buf.subarray(start)];
      const len = Number(buf.toString('latin1', pos + 1, nl2));
      if (buf.length < nl2 + 2 + len + 2) return [cmds, buf.subarray(start)];
      args.push(buf.toString('utf8', nl2 + 2, nl2 + 2 + len));
      pos = nl2 + 2 + len + 2;
    }
    cmds.push(args);
  }
}

/**
 * Fake Redis speaking enough RESP for AUTH and PING.
 * @param {{password?: string, username?: string}} opts
 */
async function fakeRedis({ password, username = 'default' } = {}) {
  const commands = [];
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let authed = !password;
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      let cmds;
      [cmds, buf] = parseResp(Buffer.concat([buf, d]));
      for (const args of cmds) {
        commands.push(args);
        const name = args[0].toUpperCase();
        if (name === 'AUTH') {
          const [user, pass] = args.length === 3 ? [args[1], args[2]] : ['default', args[1]];
          if (password && pass === password && (user === 'default' || user === username)) {
            authed = true;
            sock.write('+OK\r\n');
          } else {
            sock.write('-WRONGPASS invalid username-password pair or user is disabled.\r\n');
          }
        } else if (name === 'PING') {
          sock.write(authed ? '+PONG\r\n' : '-NOAUTH Authentication required.\r\n');
        } else {
          sock.write(`-ERR unknown command '${args[0]}'\r\n`);
        }
      }
    });
  });
  const port = await listen(server);
  return { port, commands, close: closer(server, sockets) };
}

// ------------------------------------------------------------- MongoDB ----

function decodeDoc(buf) {
  const size = buf.readInt32LE(0);
  if (size !== buf.length || buf[size - 1] !== 0) throw new Error(`bad doc size ${size}/${buf.length}`);
  const doc = {};
  let pos = 4;
  while (pos < size - 1) {
    const type = buf[pos];
    const keyEnd = buf.indexOf(0, pos + 1);
    const key = buf.toString('utf8', pos + 1, keyEnd);
    pos = keyEnd + 1;
    if (type === 0x10) {
      doc[key] = buf.readInt32LE(pos);
      pos += 4;
    } else if (type === 0x01) {
      doc[key] = buf.readDoubleLE(pos);
      pos += 8;
    } else if (type === 0x02) {
      const len = buf.readInt32LE(pos);
      if (buf[pos + 4 + len - 1] !== 0) throw new Error('string not NUL terminated');
      doc[key] = buf.toString('utf8', pos + 4, pos + 4 + len - 1);
      pos += 4 + len;
    } else {
      throw new Error(`fake mongo: unexpected type 0x${type.toString(16)} in request`);
    }
  }
  return doc;
}

function cstr(s) {
  return Buffer.concat([Buffer.from(s), Buffer.from([0])]);
}

function el(type, key, value) {
  return Buffer.concat([Buffer.from([type]), cstr(key), value]);
}

function doc(elements) {
  const body = Buffer.concat(elements);
  const size = Buffer.alloc(4);
  size.writeInt32LE(4 + body.length + 1);
  return Buffer.concat([size, body, Buffer.from([0])]);
}

function dbl(n) {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(n);
  return b;
}

function str(s) {
  const b = Buffer.from(s);
  const len = Buffer.alloc(4);
  len.writeInt32LE(b.length + 1);
  return Buffer.concat([len, b, Buffer.from([0])]);
}

// A reply shaped like a real mongod's: ok plus $clusterTime / operationTime.
function replyDoc(ok, errmsg) {
  const ts = Buffer.alloc(8);
  ts.writeBigUInt64LE(7310000000000000001n);
  const els = [];
  if (errmsg) els.push(el(0x02, 'errmsg', str(errmsg)), el(0x10, 'code', Buffer.from([13, 0, 0, 0])));
  els.push(
    el(0x01, 'ok', dbl(ok)),
    el(0x03, '$clusterTime', doc([el(0x11, 'clusterTime', ts), el(0x03, 'signature', doc([el(0x05, 'hash', Buffer.concat([Buffer.from([20, 0, 0, 0, 0]), Buffer.alloc(20)]))]))])),
    el(0x11, 'operationTime', ts),
  );
  return doc(els);
}

/**
 * Fake mongod answering OP_MSG. mode: 'ok' (ok: 1), 'notok' (ok: 0 +
 * errmsg), 'silent' (accepts, never answers).
 */
async function fakeMongo({ mode = 'ok' } = {}) {
  const requests = [];
  const errors = [];
  const sockets = new Set();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= buf.readInt32LE(0)) {
        const len = buf.readInt32LE(0);
        const msg = buf.subarray(0, len);
        buf = buf.subarray(len);
        let requestId;
        let body;
        try {
          requestId = msg.readInt32LE(4);
          const responseTo = msg.readInt32LE(8);
          const opCode = msg.readInt32LE(12);
          const flags = msg.readUInt32LE(16);
          if (opCode !== 2013) throw new Error(`opCode ${opCode} != 2013`);
          if (responseTo !== 0) throw new Error(`responseTo ${responseTo} != 0`);
          if (flags !== 0) throw new Error(`flags ${flags} != 0`);
          if (msg[20] !== 0) throw new Error(`section kind ${msg[20]} != 0`);
          body = decodeDoc(msg.subarray(21));
          if (21 + msg.readInt32LE(21) !== len) throw new Error('trailing bytes after body section');
          requests.push(body);
        } catch (err) {
          errors.push(err.message);
          sock.destroy();
          return;
        }
        if (mode === 'silent') continue;
        const valid = body.ping === 1 && body.$db === 'admin' && Object.keys(body).length === 2;
        const reply = mode === 'ok' && valid ? replyDoc(1) : replyDoc(0, valid ? 'not primary' : 'bad ping document');
        const header = Buffer.alloc(21);
        header.writeInt32LE(21 + reply.length, 0);
        header.writeInt32LE(99, 4);
        header.writeInt32LE(requestId, 8);
        header.writeInt32LE(2013, 12);
        header.writeUInt32LE(0, 16);
        header[20] = 0;
        const out = Buffer.concat([header, reply]);
        // Split the reply in two writes to exercise reassembly.
        sock.write(out.subarray(0, 10));
        setTimeout(() => sock.write(out.subarray(10)), 5);
      }
    });
  });
  const port = await listen(server);
  return { port, requests, errors, close: closer(server, sockets) };
}

module.exports = { fakeMongo, fakeRedis };
