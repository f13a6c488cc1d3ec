"""``nodegraph serve``: a small HTTP API over one long-lived executor.

See :mod:`nodegraph.server.routes` for the route table (the OpenAPI document
at ``/openapi.json`` is generated from it).  Standard library only.
"""

from .app import Api, NodegraphServer, serve
from .routes import ROUTES, Route

__all__ = ["ROUTES", "Api", "NodegraphServer", "Route", "serve"]
