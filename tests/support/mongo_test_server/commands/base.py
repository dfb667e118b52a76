"""Command registry, shared server state and the per-command context."""

import time

from bson.objectid import ObjectId

from ..bsonutil import is_number, number_value, utc_now
from ..cursors import CursorManager
from ..errors import CommandError, bad_value
from ..store import Store


# Fields any command may carry; they are accepted and ignored.
GENERIC_FIELDS = {
    "$db", "lsid", "$clusterTime", "txnNumber", "$readPreference", "readConcern", "writeConcern", "comment",
    "maxTimeMS", "apiVersion", "apiStrict", "apiDeprecationErrors", "autocommit", "startTransaction", "$audit",
    "mayBypassWriteBlocking", "$client",
}
COMMANDS = {}


def command(*names):
    """Register a handler under one or more command names."""
    def register(func):
        for name in names:
            COMMANDS[name] = func
        return func
    return register


class ServerState:
    """Everything shared by all connections: the store, cursors, counters and settings."""

    def __init__(self, host="127.0.0.1", port=27017, replset=None, argv=None):
        self.store = Store()
        self.cursors = CursorManager()
        self.host = host
        self.port = port
        self.replset = replset
        self.argv = list(argv or [])
        self.started_monotonic = time.monotonic()
        self.started_at = utc_now()
        self.connections_current = 0
        self.connections_total = 0
        self.opcounters = {"insert": 0, "query": 0, "update": 0, "delete": 0, "getmore": 0, "command": 0}
        self.election_id = ObjectId("7fffffff0000000000000001")

    @property
    def address(self):
        """``host:port`` as the server reports itself."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s:%d" % (host, self.port)

    def uptime(self):
        """Seconds since start."""
        return time.monotonic() - self.started_monotonic


class Connection:
    """Per-connection information."""

    def __init__(self, connection_id, peer):
        self.connection_id = connection_id
        self.peer = peer


class CommandContext:
    """One command invocation."""

    def __init__(self, state, connection, request):
        self.state = state
        self.connection = connection
        self.request = request
        self.cmd = request.command
        self.name = next(iter(self.cmd))
        self.db = request.db

    @property
    def store(self):
        """The server's :class:`~.store.Store`."""
        return self.state.store

    def target(self):
        """The command's first value, which names the collection for most commands."""
        value = self.cmd[self.name]
        if not isinstance(value, str):
            raise CommandError(73, "collection name has invalid type %s" % type(value).__name__)
        return value

    def ns(self, collection=None):
        """``db.collection`` for the target collection."""
        return "%s.%s" % (self.db, collection if collection is not None else self.target())

    def option(self, name, default=None):
        """A command option, with None treated as absent."""
        value = self.cmd.get(name)
        return default if value is None else value

    def int_option(self, name, default=None, minimum=0):
        """An integer option (any BSON number), validated against ``minimum``."""
        value = self.cmd.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not is_number(value):
            raise CommandError(14, "BSON field '%s.%s' is the wrong type, expected a number" % (self.name, name), code_name="TypeMismatch")
        value = int(number_value(value))
        if value < minimum:
            raise bad_value("BSON field '%s' value must be >= %d, actual value '%d'" % (name, minimum, value))
        return value


def cursor_batch_size(ctx):
    """``cursor.batchSize`` of a cursor-returning command, or None for the default."""
    spec = ctx.cmd.get("cursor")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise CommandError(14, "cursor field must be missing or an object", code_name="TypeMismatch")
    size = spec.get("batchSize")
    if size is None:
        return None
    if not is_number(size) or number_value(size) < 0:
        raise bad_value("batchSize must be a non-negative number")
    return int(number_value(size))


def require_collection(ctx, allow_view=False):
    """The command's target collection; NamespaceNotFound (26) or, for views, 166 unless allowed."""
    collection = ctx.store.collection(ctx.db, ctx.target())
    if collection is None:
        raise CommandError(26, "ns does not exist: %s" % ctx.ns())
    if collection.is_view and not allow_view:
        raise CommandError(166, "Namespace %s is a view, not a collection" % ctx.ns())
    return collection
