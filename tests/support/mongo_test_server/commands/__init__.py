"""Command dispatch and the command handlers.

Each handler takes a :class:`~.base.CommandContext` and returns the reply
document (``ok: 1`` is appended when missing) or raises
:class:`~..errors.CommandError`, which becomes an ``{ok: 0, errmsg, code,
codeName}`` reply. Unknown commands get CommandNotFound (59), as from a real
server. :data:`COMMANDS` maps every supported command name to its handler;
the handlers live in :mod:`.diagnostics`, :mod:`.catalog` and :mod:`.crud`.
"""

import logging

from ..errors import COMMAND_NOT_SUPPORTED, FAILED_TO_PARSE, CommandError
from . import catalog, crud, diagnostics
from .base import COMMANDS, CommandContext, Connection, ServerState

LOG = logging.getLogger(__name__)

__all__ = ["COMMANDS", "Connection", "ServerState", "dispatch", "catalog", "crud", "diagnostics"]


def dispatch(state, connection, request):
    """Run one command request and return its reply document."""
    try:
        ctx = CommandContext(state, connection, request)
    except StopIteration:
        return CommandError(FAILED_TO_PARSE, "Empty command object").to_reply()
    except CommandError as exc:
        return exc.to_reply()
    except Exception as exc:  # an undecodable command document
        return CommandError(22, "invalid BSON in command: %s" % exc).to_reply()
    LOG.debug("conn%d %s %s.$cmd", connection.connection_id, ctx.name, ctx.db)
    handler = COMMANDS.get(ctx.name)
    try:
        if handler is None:
            raise CommandError(59, "no such command: '%s'" % ctx.name)
        if ctx.cmd.get("startTransaction") or "autocommit" in ctx.cmd:
            if state.replset:
                raise CommandError(COMMAND_NOT_SUPPORTED, "transactions are not supported by the nodeops MongoDB test server")
            raise CommandError(20, "Transaction numbers are only allowed on a replica set member or mongos")
        if ctx.name not in ("find", "insert", "update", "delete", "getMore"):
            state.opcounters["command"] += 1
        reply = handler(ctx)
    except CommandError as exc:
        LOG.debug("conn%d %s failed: %s (%d)", connection.connection_id, ctx.name, exc.errmsg, exc.code)
        return exc.to_reply()
    except Exception as exc:  # never let a bug take the server down
        LOG.exception("internal error in %s", ctx.name)
        return CommandError(1, "internal error in %s: %s" % (ctx.name, exc)).to_reply()
    if "ok" not in reply:
        reply["ok"] = 1.0
    return reply
