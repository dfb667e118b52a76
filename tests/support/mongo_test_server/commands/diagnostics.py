"""Handshake, diagnostics, replica set status and session commands."""

import os
import platform
import socket
import time
import uuid

from bson.binary import Binary
from bson.int64 import Int64
from bson.timestamp import Timestamp

from .. import (LOGICAL_SESSION_TIMEOUT_MINUTES, MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE_BYTES, MAX_WIRE_VERSION, MAX_WRITE_BATCH_SIZE,
                MIN_WIRE_VERSION, SERVER_VERSION, VERSION_ARRAY)
from ..bsonutil import utc_now
from ..errors import CommandError
from .base import GENERIC_FIELDS, COMMANDS, command


@command("hello", "isMaster", "ismaster")
def cmd_hello(ctx):
    """Handshake: server limits, wire versions and (with --replset) the set topology."""
    state = ctx.state
    reply = {}
    if ctx.cmd.get("helloOk"):
        reply["helloOk"] = True
    reply["isWritablePrimary" if ctx.name == "hello" else "ismaster"] = True
    if state.replset:
        reply.update({
            "hosts": [state.address],
            "setName": state.replset,
            "setVersion": 1,
            "secondary": False,
            "primary": state.address,
            "me": state.address,
            "electionId": state.election_id,
        })
    reply.update({
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "maxMessageSizeBytes": MAX_MESSAGE_SIZE_BYTES,
        "maxWriteBatchSize": MAX_WRITE_BATCH_SIZE,
        "localTime": utc_now(),
        "logicalSessionTimeoutMinutes": LOGICAL_SESSION_TIMEOUT_MINUTES,
        "connectionId": ctx.connection.connection_id,
        "minWireVersion": MIN_WIRE_VERSION,
        "maxWireVersion": MAX_WIRE_VERSION,
        "readOnly": False,
    })
    return reply


@command("ping")
def cmd_ping(ctx):
    """Liveness probe."""
    return {}


@command("buildInfo", "buildinfo")
def cmd_build_info(ctx):
    """Version information."""
    return {
        "version": SERVER_VERSION,
        "gitVersion": "0000000000000000000000000000000000000000",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": list(VERSION_ARRAY),
        "bits": 64,
        "debug": False,
        "maxBsonObjectSize": MAX_BSON_OBJECT_SIZE,
        "storageEngines": ["inMemory"],
    }


@command("serverStatus")
def cmd_server_status(ctx):
    """Minimal serverStatus: host, version, uptime, connections, opcounters."""
    state = ctx.state
    uptime = state.uptime()
    reply = {
        "host": "%s:%d" % (socket.gethostname(), state.port),
        "version": SERVER_VERSION,
        "process": "mongod",
        "pid": Int64(os.getpid()),
        "uptime": float(int(uptime)),
        "uptimeMillis": Int64(int(uptime * 1000)),
        "uptimeEstimate": Int64(int(uptime)),
        "localTime": utc_now(),
        "connections": {
            "current": state.connections_current,
            "available": 838860 - state.connections_current,
            "totalCreated": state.connections_total,
            "active": 1,
        },
        "opcounters": {k: Int64(v) for k, v in state.opcounters.items()},
        "storageEngine": {"name": "inMemory", "supportsCommittedReads": False, "persistent": False},
    }
    if state.replset:
        reply["repl"] = {
            "setName": state.replset, "setVersion": 1, "isWritablePrimary": True, "secondary": False,
            "hosts": [state.address], "primary": state.address, "me": state.address,
        }
    return reply


def _require_replset(ctx):
    if not ctx.state.replset:
        raise CommandError(76, "not running with --replSet")


@command("replSetGetStatus")
def cmd_repl_set_get_status(ctx):
    """A one-member replica set whose only member is PRIMARY."""
    _require_replset(ctx)
    state = ctx.state
    now = utc_now()
    optime = {"ts": Timestamp(int(time.time()), 1), "t": Int64(1)}
    return {
        "set": state.replset,
        "date": now,
        "myState": 1,
        "term": Int64(1),
        "syncSourceHost": "",
        "syncSourceId": -1,
        "heartbeatIntervalMillis": Int64(2000),
        "majorityVoteCount": 1,
        "writeMajorityCount": 1,
        "votingMembersCount": 1,
        "writableVotingMembersCount": 1,
        "optimes": {"lastCommittedOpTime": optime, "appliedOpTime": optime, "durableOpTime": optime},
        "members": [{
            "_id": 0,
            "name": state.address,
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": int(state.uptime()),
            "optime": optime,
            "optimeDate": now,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": Timestamp(int(state.started_at.timestamp()), 1),
            "electionDate": state.started_at,
            "configVersion": 1,
            "configTerm": 1,
            "self": True,
            "lastHeartbeatMessage": "",
        }],
    }


@command("replSetGetConfig")
def cmd_repl_set_get_config(ctx):
    """The one-member replica set configuration."""
    _require_replset(ctx)
    state = ctx.state
    return {"config": {
        "_id": state.replset,
        "version": 1,
        "term": 1,
        "members": [{
            "_id": 0, "host": state.address, "arbiterOnly": False, "buildIndexes": True, "hidden": False,
            "priority": 1.0, "tags": {}, "secondaryDelaySecs": Int64(0), "votes": 1,
        }],
        "protocolVersion": Int64(1),
        "writeConcernMajorityJournalDefault": True,
        "settings": {"chainingAllowed": True, "heartbeatIntervalMillis": 2000, "electionTimeoutMillis": 10000},
    }}


@command("getCmdLineOpts")
def cmd_get_cmd_line_opts(ctx):
    """The server's command line."""
    state = ctx.state
    parsed = {"net": {"bindIp": state.host, "port": state.port}, "storage": {"engine": "inMemory"}}
    if state.replset:
        parsed["replication"] = {"replSet": state.replset}
    return {"argv": ["mongo_test_server"] + state.argv, "parsed": parsed}


_PARAMETERS = {
    "featureCompatibilityVersion": {"version": "7.0"},
    "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
    "logLevel": 0,
    "maxBSONDepth": 200,
    "internalQueryMaxBlockingSortMemoryUsageBytes": 104857600,
}


@command("getParameter")
def cmd_get_parameter(ctx):
    """A few server parameters (``getParameter: '*'`` returns all of them)."""
    if ctx.cmd["getParameter"] == "*" or (isinstance(ctx.cmd["getParameter"], dict) and ctx.cmd["getParameter"].get("allParameters")):
        return dict(_PARAMETERS)
    wanted = [k for k in ctx.cmd if k != "getParameter" and k not in GENERIC_FIELDS]
    reply = {}
    for name in wanted:
        if name not in _PARAMETERS:
            raise CommandError(72, "no option found to get")
        reply[name] = _PARAMETERS[name]
    if not reply:
        raise CommandError(72, "no option found to get")
    return reply


@command("getLog")
def cmd_get_log(ctx):
    """An empty server log."""
    name = ctx.cmd["getLog"]
    if name == "*":
        return {"names": ["global", "startupWarnings"]}
    if name not in ("global", "startupWarnings"):
        raise CommandError(2, "No log named '%s'" % name)
    return {"totalLinesWritten": 0, "log": []}


@command("hostInfo")
def cmd_host_info(ctx):
    """Basic host information."""
    return {
        "system": {
            "currentTime": utc_now(), "hostname": socket.gethostname(), "cpuAddrSize": 64,
            "numCores": os.cpu_count() or 1, "cpuArch": platform.machine(), "numaEnabled": False,
        },
        "os": {"type": platform.system(), "name": platform.platform(), "version": platform.release()},
        "extra": {},
    }


@command("connectionStatus")
def cmd_connection_status(ctx):
    """No authentication: nobody is logged in."""
    return {"authInfo": {"authenticatedUsers": [], "authenticatedUserRoles": []}}


@command("whatsmyuri")
def cmd_whatsmyuri(ctx):
    """The client's address."""
    return {"you": ctx.connection.peer}


@command("listCommands")
def cmd_list_commands(ctx):
    """Names of the supported commands."""
    return {"commands": {name: {"help": "", "requiresAuth": False, "secondaryOk": True, "adminOnly": False} for name in sorted(COMMANDS)}}


@command("currentOp")
def cmd_current_op(ctx):
    """No operations are ever in progress between two messages."""
    return {"inprog": []}


@command("saslStart", "saslContinue", "authenticate")
def cmd_authenticate(ctx):
    """Authentication is not supported."""
    raise CommandError(18, "Authentication failed: authentication is not supported by the nodeops MongoDB test server")


@command("endSessions", "killSessions", "killAllSessions", "killAllSessionsByPattern", "refreshSessions")
def cmd_sessions(ctx):
    """Sessions are accepted and not tracked."""
    return {}


@command("startSession")
def cmd_start_session(ctx):
    """A new (untracked) logical session id."""
    return {"id": {"id": Binary(uuid.uuid4().bytes, 4)}, "timeoutMinutes": LOGICAL_SESSION_TIMEOUT_MINUTES}
