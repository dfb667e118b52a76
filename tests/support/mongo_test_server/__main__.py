"""Command line entry point: ``python -m mongo_test_server --host 127.0.0.1 --port 0``.

Prints ``listening on HOST:PORT`` on stdout once connections are accepted
(``--port 0`` picks a free port and prints it), logs to stderr, and exits with
status 0 after a graceful shutdown on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import logging
import signal
import sys

from .server import MongoTestServer

LOG = logging.getLogger("mongo_test_server")


def parse_args(argv):
    """Parse command line arguments."""
    parser = argparse.ArgumentParser(prog="mongo_test_server", description="MongoDB wire-protocol test server with an in-memory store.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=27017, help="TCP port; 0 picks a free one (default: 27017)")
    parser.add_argument("--replset", metavar="NAME", help="act as the PRIMARY of a one-member replica set NAME")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error", "critical"], help="stderr log level (default: info)")
    return parser.parse_args(argv)


async def serve(args, argv):
    """Run the server until SIGTERM/SIGINT; returns the exit status."""
    server = MongoTestServer(args.host, args.port, args.replset, argv)
    try:
        port = await server.start()
    except OSError as exc:
        LOG.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print("listening on %s:%d" % (args.host, port), flush=True)
    await stop.wait()
    LOG.info("shutting down")
    await server.stop()
    LOG.info("stopped")
    return 0


def main(argv=None):
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args, argv))


if __name__ == "__main__":
    sys.exit(main())
