"""Fixtures for module tests; the harness itself is module_harness.py (a unique name, so
``from module_harness import ...`` in a test never picks up another directory's conftest)."""

from module_harness import patched_module, run_module  # noqa: F401  pylint: disable=unused-import
