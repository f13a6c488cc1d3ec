"""Test suite (a package, so that tests/gui is ``tests.gui`` and never shadows the ``gui`` package)."""
