"""The ``--ray-address`` and ``--ray-actors`` options that verbs with ``--ray`` share."""

from __future__ import annotations

from typing import Annotated

import typer

RayAddressOption = Annotated[str | None, typer.Option(
    help="With --ray: the Ray cluster to run on (e.g. auto, HOST:6379, ray://HOST:10001); "
         "default: a local Ray with one CPU per actor.")]


DEFAULT_RAY_ACTORS = 2
"""``--ray-actors`` when not given."""


def _actors_help(holding: str) -> str:
    return f"With --ray: actors holding {holding}, one CPU each (default {DEFAULT_RAY_ACTORS})."


RayActorsOption = Annotated[int | None, typer.Option(min=1, help=_actors_help("the model"))]
"""``--ray-actors`` of verbs whose actors hold a model (``attribute``)."""
RayBackboneActorsOption = Annotated[int | None, typer.Option(
    min=1, help=_actors_help("the backbone"))]
"""``--ray-actors`` of verbs whose actors hold a backbone (``train probe``)."""


def check_ray_options(ray: bool, address: str | None, actors: int | None) -> None:
    """``--ray-address`` and ``--ray-actors`` only with ``--ray``."""
    if not ray and (address is not None or actors is not None):
        raise typer.BadParameter("--ray-address and --ray-actors go with --ray",
                                 param_hint="--ray")
