"""Error type and the MongoDB error codes the test server replies with."""

# code -> codeName, as a real server names them.
CODE_NAMES = {
    1: "InternalError",
    2: "BadValue",
    9: "FailedToParse",
    13: "Unauthorized",
    14: "TypeMismatch",
    16: "InvalidLength",
    18: "AuthenticationFailed",
    20: "IllegalOperation",
    22: "InvalidBSON",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    28: "PathNotViable",
    40: "ConflictingUpdateOperators",
    43: "CursorNotFound",
    48: "NamespaceExists",
    53: "InvalidIdField",
    59: "CommandNotFound",
    66: "ImmutableField",
    67: "CannotCreateIndex",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    76: "NoReplicationEnabled",
    85: "IndexOptionsConflict",
    86: "IndexKeySpecsConflict",
    115: "CommandNotSupported",
    175: "QueryPlanKilled",
    197: "InvalidIndexSpecificationOption",
    121: "DocumentValidationFailure",
    166: "CommandNotSupportedOnView",
    352: "UnsupportedOpQueryCommand",
    15955: "Location15955",
    17419: "Location17419",
    40238: "Location40238",
    40323: "Location40323",
    40324: "Location40324",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
    40415: "Location40415",
    31250: "Location31250",
    31253: "Location31253",
    31254: "Location31254",
}

BAD_VALUE = 2
FAILED_TO_PARSE = 9
TYPE_MISMATCH = 14
COMMAND_NOT_SUPPORTED = 115


class CommandError(Exception):
    """A command (or one write statement) failed with a MongoDB error code.

    ``extra`` holds additional reply fields (``keyPattern``, ``keyValue``,
    ``errInfo`` ...) that a real server would add for this error.
    """

    def __init__(self, code, errmsg, code_name=None, **extra):
        super().__init__(errmsg)
        self.code = code
        self.errmsg = errmsg
        self.code_name = code_name or CODE_NAMES.get(code, "Location%d" % code)
        self.extra = extra

    def to_reply(self):
        """Return the ``{ok: 0, ...}`` command reply for this error."""
        reply = {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": self.code_name}
        reply.update(self.extra)
        return reply

    def to_write_error(self, index):
        """Return the ``writeErrors`` entry for statement number ``index``."""
        entry = {"index": index, "code": self.code}
        entry.update(self.extra)
        entry["errmsg"] = self.errmsg
        return entry


def bad_value(message):
    """Shortcut for a BadValue (2) error."""
    return CommandError(BAD_VALUE, message)


def unsupported(what):
    """An error for something a real server supports but this test server does not."""
    return CommandError(BAD_VALUE, "%s is not supported by the nodeops MongoDB test server" % what)
