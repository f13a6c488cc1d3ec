"""Dockable side panels: node library, problems, output gallery, minimap."""
