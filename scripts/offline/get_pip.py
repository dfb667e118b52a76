"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test downloads get-pip.py from a CI file host that is unreachable here.
This does the same job with what Python ships: ensurepip, then a normal
``pip install`` of the requested packages from the reachable package index.
"""

import subprocess
import sys

IGNORED = {"--no-setuptools", "--no-wheel"}


def main():
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
    args = [a for a in sys.argv[1:] if a not in IGNORED]
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    main()
