"""Server-side cursors: result snapshots handed out in batches.

A cursor holds the complete result list computed when it was opened (a
snapshot); ``getMore`` hands out further batches. Like mongod, a batch holds
at most ``batchSize`` documents (101 for a first batch without one) and at most
16 MiB of documents, but always at least one document. Cursors idle for more
than ten minutes are discarded.
"""

import itertools
import random
import time

from bson.int64 import Int64

from .errors import CommandError

DEFAULT_FIRST_BATCH = 101
MAX_BATCH_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_SECONDS = 600


class Cursor:
    """Remaining results of one query."""

    __slots__ = ("cursor_id", "ns", "docs", "position", "last_used")

    def __init__(self, cursor_id, ns, docs):
        self.cursor_id = cursor_id
        self.ns = ns
        self.docs = docs
        self.position = 0
        self.last_used = time.monotonic()

    @property
    def exhausted(self):
        """True when every document has been handed out."""
        return self.position >= len(self.docs)

    def take(self, batch_size):
        """Hand out the next batch as RawBSONDocuments."""
        self.last_used = time.monotonic()
        batch = []
        total = 0
        while self.position < len(self.docs) and (batch_size is None or len(batch) < batch_size):
            doc = self.docs[self.position]
            size = doc.size()
            if batch and total + size > MAX_BATCH_BYTES:
                break
            batch.append(doc.as_raw_document())
            total += size
            self.position += 1
        return batch


class CursorManager:
    """All open cursors of the server, by id."""

    def __init__(self):
        self.cursors = {}
        self._ids = itertools.count(random.randint(1 << 40, 1 << 50))

    def _reap(self):
        deadline = time.monotonic() - IDLE_TIMEOUT_SECONDS
        for cursor_id in [cid for cid, c in self.cursors.items() if c.last_used < deadline]:
            del self.cursors[cursor_id]

    def open(self, ns, docs, batch_size=None, single_batch=False):
        """Open a cursor over ``docs``; returns the ``cursor`` reply sub-document."""
        self._reap()
        cursor = Cursor(next(self._ids), ns, docs)
        batch = cursor.take(DEFAULT_FIRST_BATCH if batch_size is None else batch_size)
        cursor_id = 0
        if not single_batch and not cursor.exhausted:
            cursor_id = cursor.cursor_id
            self.cursors[cursor_id] = cursor
        return {"firstBatch": batch, "id": Int64(cursor_id), "ns": ns}

    def get_more(self, cursor_id, ns, batch_size=None):
        """The next batch of an open cursor; returns the ``cursor`` reply sub-document."""
        self._reap()
        cursor = self.cursors.get(cursor_id)
        if cursor is None:
            raise CommandError(43, "cursor id %d not found" % cursor_id)
        if cursor.ns != ns:
            raise CommandError(13, "Requested getMore on namespace '%s', but cursor belongs to a different namespace %s" % (ns, cursor.ns))
        batch = cursor.take(batch_size)
        if cursor.exhausted:
            del self.cursors[cursor_id]
            cursor_id = 0
        return {"nextBatch": batch, "id": Int64(cursor_id), "ns": ns}

    def kill(self, ns, cursor_ids):
        """Kill cursors; returns ``(killed, not_found)`` lists."""
        killed, not_found = [], []
        for cursor_id in cursor_ids:
            cursor = self.cursors.get(cursor_id)
            if cursor is not None and cursor.ns == ns:
                del self.cursors[cursor_id]
                killed.append(Int64(cursor_id))
            else:
                not_found.append(Int64(cursor_id))
        return killed, not_found

    def drop_namespace(self, db_name, collection_name=None):
        """Forget the cursors of a dropped collection, or of a whole dropped database."""
        if collection_name is None:
            doomed = [cid for cid, c in self.cursors.items() if c.ns.startswith(db_name + ".")]
        else:
            doomed = [cid for cid, c in self.cursors.items() if c.ns == "%s.%s" % (db_name, collection_name)]
        for cursor_id in doomed:
            del self.cursors[cursor_id]
