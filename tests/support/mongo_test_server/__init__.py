"""A MongoDB wire-protocol test server backed by an in-memory store.

No MongoDB server can be installed on the machines this collection is developed
and tested on, so this package provides a stand-in that pymongo talks to exactly
as it talks to a real ``mongod``: OP_MSG and legacy OP_QUERY framing, cursors,
write commands with write errors, catalog commands and the health-probe
commands. Documents are stored as the raw BSON bytes the client sent, so they
come back byte-identical.

Layout:

* :mod:`.protocol` -- message framing (OP_MSG, OP_QUERY/OP_REPLY).
* :mod:`.server` -- asyncio TCP server, one task per connection.
* :mod:`.commands` -- command dispatch and the command handlers.
* :mod:`.store` -- the in-memory catalog (databases, collections, views,
  indexes) and write operations with unique-index and validator enforcement.
* :mod:`.query`, :mod:`.update`, :mod:`.aggregation` -- query matching,
  sorting and projection; update operators; aggregation pipelines.
* :mod:`.cursors` -- server-side cursors and batching.
* :mod:`.bsonutil` -- BSON helpers (raw documents, comparison order, keys).

Run it with ``python -m mongo_test_server --host 127.0.0.1 --port 0``.
"""

SERVER_VERSION = "7.0.0-nodeops-test"
VERSION_ARRAY = [7, 0, 0, 0]
MIN_WIRE_VERSION = 0
MAX_WIRE_VERSION = 21
MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024
MAX_MESSAGE_SIZE_BYTES = 48000000
MAX_WRITE_BATCH_SIZE = 100000
LOGICAL_SESSION_TIMEOUT_MINUTES = 30

__all__ = [
    "SERVER_VERSION",
    "VERSION_ARRAY",
    "MIN_WIRE_VERSION",
    "MAX_WIRE_VERSION",
    "MAX_BSON_OBJECT_SIZE",
    "MAX_MESSAGE_SIZE_BYTES",
    "MAX_WRITE_BATCH_SIZE",
    "LOGICAL_SESSION_TIMEOUT_MINUTES",
]
