"""Shared pytest setup: make this checkout importable as ``ansible_collections.nodeops.stack``.

Modules import their logic as ``ansible_collections.nodeops.stack.plugins.module_utils...``;
the repository root is the collection root, so a symlink tree under ``.cache`` provides the
namespace path without copying anything.
"""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS_ROOT = os.path.join(REPO_ROOT, ".cache", "collections")


def _ensure_collection_link():
    ns_dir = os.path.join(COLLECTIONS_ROOT, "ansible_collections", "nodeops")
    link = os.path.join(ns_dir, "stack")
    os.makedirs(ns_dir, exist_ok=True)
    if not os.path.islink(link):
        os.symlink(os.path.relpath(REPO_ROOT, ns_dir), link)


_ensure_collection_link()
if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
# Test support code (load generator, playbook runner, ...) importable by plain name.
SUPPORT_DIR = os.path.join(REPO_ROOT, "tests", "support")
if SUPPORT_DIR not in sys.path:
    sys.path.append(SUPPORT_DIR)
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS_ROOT)
