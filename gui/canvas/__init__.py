"""The node canvas: scene (model glue), view (interaction) and the items it draws."""

from .scene import GraphScene
from .view import GraphView

__all__ = ["GraphScene", "GraphView"]
