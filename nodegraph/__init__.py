"""nodegraph — headless engine for node-graph diffusion pipelines.

The public Python API::

    import nodegraph

    graph = nodegraph.load_workflow("workflows/txt2img.json")
    executor = nodegraph.Executor(device="auto", output_dir="out")   # keep it: it owns the cache
    nodegraph.apply_overrides(graph, executor.registry, {"sampler.seed": 7})
    report = executor.run(graph)
    report.nodes["sampler"].status   # "executed" or "cached"
    report.outputs                   # files written

This package imports neither Qt nor torch nor any node pack at import time.
"""

from .context import CancelToken, NodeContext
from .device import DevicePolicy
from .errors import (
    Cancelled,
    NodegraphError,
    NodeInputError,
    OverrideError,
    SpecError,
    ValidationIssue,
    WorkflowFileError,
    WorkflowInvalid,
)
from .events import Event, NodeError, NodeFinished, NodeProgress, NodeStarted, NodeStats, RunFinished, RunStarted
from .executor import Executor, NodeReport, RunReport
from .graph import Graph, GraphChange, Group, Link, Node
from .overrides import apply_overrides
from .plan import Plan, build_plan, validate
from .registry import Registry
from .spec import (
    Bool,
    Combo,
    Estimate,
    Float,
    In,
    Input,
    Int,
    NodeResult,
    NodeSpec,
    Out,
    Output,
    Seed,
    String,
    Widget,
    node,
)
from .types import ANY, compatible
from .workflow import dumps as dump_workflow_text
from .workflow import load as load_workflow
from .workflow import loads as load_workflow_text
from .workflow import save as save_workflow

__version__ = "0.1.0"

__all__ = [
    "ANY", "Bool", "CancelToken", "Cancelled", "Combo", "DevicePolicy", "Estimate", "Event", "Executor", "Float",
    "Graph",
    "GraphChange", "Group", "In", "Input", "Int", "Link", "Node", "NodeContext", "NodeError", "NodeFinished",
    "NodeInputError", "NodeProgress", "NodeReport", "NodeResult", "NodeSpec", "NodeStarted", "NodeStats",
    "NodegraphError",
    "Out", "Output", "OverrideError", "Plan", "Registry", "RunFinished", "RunReport", "RunStarted", "Seed",
    "SpecError", "String", "ValidationIssue", "Widget", "WorkflowFileError", "WorkflowInvalid",
    "apply_overrides", "build_plan", "compatible", "dump_workflow_text", "load_workflow", "load_workflow_text",
    "node", "save_workflow", "validate",
]
