"""PySide6 desktop editor over :class:`nodegraph.Graph` (``nodegraph gui``).

Importing this package imports no Qt; ``gui.app.main`` does.
"""
