"""The asyncio TCP server: one task per connection, graceful shutdown.

Each connection reads whole messages (header first, then exactly the
announced length, so messages of any size up to ``maxMessageSizeBytes`` work),
dispatches them and writes the reply. Commands run synchronously on the event
loop, so every command is atomic with respect to the others.
"""

import asyncio
import itertools
import logging
import struct

import bson.errors

from . import MAX_MESSAGE_SIZE_BYTES
from .commands import Connection, ServerState, dispatch
from .errors import CommandError
from .protocol import HEADER, OP_MSG, OP_QUERY, ProtocolError, encode_op_msg, encode_op_reply, parse_header, parse_op_msg, parse_op_query

LOG = logging.getLogger(__name__)

# OP_QUERY is only accepted for the handshake, as on MongoDB 6.0+.
OP_QUERY_COMMANDS = ("hello", "isMaster", "ismaster")
# A little slack over maxMessageSizeBytes for headers and command fields.
MAX_INCOMING_MESSAGE = MAX_MESSAGE_SIZE_BYTES + 64 * 1024
# Exceptions that mean a message could not be parsed.
_MALFORMED = (ValueError, IndexError, struct.error, bson.errors.BSONError)


class MongoTestServer:
    """A MongoDB wire-protocol server over an in-memory :class:`~.store.Store`."""

    def __init__(self, host="127.0.0.1", port=27017, replset=None, argv=None):
        self.state = ServerState(host, port, replset, argv)
        self._server = None
        self._tasks = set()
        self._connection_ids = itertools.count(1)
        self._reply_ids = itertools.count(1)

    @property
    def port(self):
        """The bound TCP port (the real one when started with port 0)."""
        return self.state.port

    async def start(self):
        """Bind and start accepting connections; returns the bound port."""
        self._server = await asyncio.start_server(self._on_connect, self.state.host, self.state.port)
        self.state.port = self._server.sockets[0].getsockname()[1]
        LOG.info("listening on %s", self.state.address)
        return self.state.port

    async def stop(self):
        """Stop accepting, close every connection and wait for the handlers to end."""
        if self._server is None:
            return
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._server.wait_closed(), timeout=5)
        except asyncio.TimeoutError:
            LOG.warning("timed out waiting for connections to close")
        self._server = None

    async def _on_connect(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_text = "%s:%s" % (peer[0], peer[1]) if isinstance(peer, tuple) else str(peer)
        connection = Connection(next(self._connection_ids), peer_text)
        state = self.state
        state.connections_current += 1
        state.connections_total += 1
        LOG.debug("conn%d accepted from %s", connection.connection_id, peer_text)
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, request_id, _response_to, opcode = parse_header(header)
                if length < HEADER.size or length > MAX_INCOMING_MESSAGE:
                    raise ProtocolError("invalid message length %d" % length)
                payload = await reader.readexactly(length - HEADER.size)
                reply = self.handle_message(connection, request_id, opcode, payload)
                if reply is not None:
                    writer.write(reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolError as exc:
            LOG.warning("conn%d protocol error, closing: %s", connection.connection_id, exc)
        except Exception:  # a bug must cost one connection, not the server
            LOG.exception("conn%d unexpected error, closing", connection.connection_id)
        finally:
            state.connections_current -= 1
            LOG.debug("conn%d closed", connection.connection_id)
            writer.close()
            self._tasks.discard(task)

    def handle_message(self, connection, request_id, opcode, payload):
        """Handle one message; returns the encoded reply or None (moreToCome)."""
        if opcode == OP_MSG:
            try:
                request = parse_op_msg(request_id, payload)
            except _MALFORMED as exc:
                raise ProtocolError("malformed OP_MSG: %s" % exc) from exc
            reply = dispatch(self.state, connection, request)
            if request.more_to_come:
                return None
            return self._encode(encode_op_msg, request_id, reply)
        if opcode == OP_QUERY:
            try:
                request, collection = parse_op_query(request_id, payload)
            except _MALFORMED as exc:
                raise ProtocolError("malformed OP_QUERY: %s" % exc) from exc
            if collection != "$cmd":
                return self._encode(encode_op_reply, request_id, {"$err": "OP_QUERY is no longer supported", "code": 5739101}, query_failure=True)
            name = next(iter(request.command), None)
            if name not in OP_QUERY_COMMANDS:
                error = CommandError(352, "Unsupported OP_QUERY command: %s. The client driver may require an upgrade. "
                                     "For more details see https://dochub.mongodb.org/core/legacy-opcode-removal" % name)
                return self._encode(encode_op_reply, request_id, error.to_reply())
            return self._encode(encode_op_reply, request_id, dispatch(self.state, connection, request))
        raise ProtocolError("unsupported opcode %d" % opcode)

    def _encode(self, encoder, request_id, reply, **kwargs):
        try:
            return encoder(next(self._reply_ids), request_id, reply, **kwargs)
        except Exception as exc:  # an unencodable reply must not kill the connection
            LOG.exception("cannot encode reply")
            error = CommandError(1, "cannot encode reply: %s" % exc).to_reply()
            return encoder(next(self._reply_ids), request_id, error, **kwargs)
