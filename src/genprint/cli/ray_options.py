"""What verbs with ``--ray`` share: the ``--ray-address`` and ``--ray-actors`` options, and the
rows computed by Ray for files already listed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # pragma: no cover
    from genprint.results import Attribution

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


def ray_rows(model: Path, paths: Sequence[Path], attributor: object, *, address: str | None,
             actors: int, on_progress: Callable[[int], None] | None, batch_size: int = 64,
             animated: str = "refuse", max_tiles: int | None = None) -> Iterator[Attribution]:
    """The rows of ``--ray`` (``attribute``, ``eval``): :func:`genprint.scale.iter_attributions`
    on the files already listed (one row each, a folder among them being a file that cannot be
    read), pinned to the model loaded here (its ``model_sha256``); the actors import the
    plugin modules this process imported (``--plugin``, ``GENPRINT_PLUGINS``)."""
    from genprint.plugins import loaded_plugin_specs
    from genprint.scale import iter_attributions

    return iter_attributions(
        model, list(paths), address=address, actors=actors, batch_size=batch_size,
        animated=animated,  # type: ignore[arg-type]
        max_tiles=max_tiles, expected_model_sha256=getattr(attributor, "model_sha256_", None),
        plugins=loaded_plugin_specs(), on_progress=on_progress, expand_folders=False)
