"""Node packs shipped with nodegraph.

Each sub-package is an independent pack that registers its node types with the
engine through the public :mod:`nodegraph` API (see ``register`` functions and
the ``nodegraph.nodes`` entry-point group in ``pyproject.toml``).  Third-party
packs plug in exactly the same way, so nothing here is privileged.
"""
