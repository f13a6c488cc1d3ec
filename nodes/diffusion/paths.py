"""Model folders: kept importable here for existing code; the service is
:mod:`nodes.shared.model_paths`, shared by every pack that loads model files."""

from nodes.shared.model_paths import *  # noqa: F403
from nodes.shared.model_paths import __all__  # noqa: F401
