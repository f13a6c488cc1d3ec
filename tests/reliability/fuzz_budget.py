"""How many examples the fuzz tests run: a CI budget by default, ×25 with ``NODEGRAPH_FUZZ=long``.

The CI counts are chosen to catch the crash classes found so far (each fuzz test
finds its known crashes within them) while keeping all fuzz tests together near a
minute on a loaded 2-core machine; the long profile is for hunting before a release::

    NODEGRAPH_FUZZ=long pytest tests/reliability -k fuzz
"""

from __future__ import annotations

import os

LONG = os.environ.get("NODEGRAPH_FUZZ", "").strip().lower() == "long"
FACTOR = 25 if LONG else 1


def examples(ci: int) -> int:
    """The number of examples for a test whose CI budget is ``ci``."""
    return ci * FACTOR
