"""The prepare pipeline as data: which stages run, in which order, with which options.

The matching stages take immutable tables (the pattern table of a backend). Stage options must
be plain data so a dumped stage replays alone, so these adapters take the backend *name* and
look its table up (a pure function of the name) instead of carrying the table in the options.
"""

from __future__ import annotations

from pyrsistent import PMap

from .ir import Graph
from .patterns import default_table
from .pipeline.stage import StageSpec, stage
from .qconfig import QConfigSpec
from .stages.find_matches import MatchResult, find_matches
from .stages.find_quants import QuantPlan, find_quants
from .stages.fuse import fuse
from .stages.generate_qconfig_map import QConfigMap, generate_qconfig_map
from .stages.insert_observers import insert_observers


def match_patterns(
    graph: Graph,
    modules: PMap,
    qconfig_map: QConfigMap,
    *,
    backend: str,
    custom_modules: tuple[str, ...] = (),
) -> MatchResult:
    """`find_matches` with the default pattern table of `backend`. Pure; see find_matches."""
    return find_matches(
        graph, modules, default_table(backend), qconfig_map.qconfigs, custom_modules=custom_modules
    )


def plan_quants(graph: Graph, modules: PMap, matches: MatchResult, *, backend: str) -> QuantPlan:
    """`find_quants` told the backend and the module specs, so the inputs of convs that run on
    a 16-bit kernel keep reduce_range where their qconfig asks. Pure; see find_quants."""
    return find_quants(graph, matches, modules=modules, backend=backend)


def prepare_stages(
    qconfig: QConfigSpec, backend: str, custom_modules: tuple[str, ...] = ()
) -> tuple[StageSpec, ...]:
    """The prepare stages in order: fuse, qconfig map, matching, quant discovery, observers."""
    return (
        stage(fuse, uses_params=True, uses_modules=True),
        stage(generate_qconfig_map, uses_modules=True, qconfig=qconfig),
        stage(
            match_patterns,
            name="find_matches",
            uses_modules=True,
            reads=("generate_qconfig_map",),
            backend=backend,
            custom_modules=tuple(custom_modules),
        ),
        stage(plan_quants, name="find_quants", uses_modules=True, reads=("find_matches",), backend=backend),
        stage(insert_observers, reads=("find_quants",), phase="OBSERVED"),
    )
