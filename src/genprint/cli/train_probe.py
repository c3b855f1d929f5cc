"""``genprint train probe``: frozen foundation-model features with a light head (Cioni et al.)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from genprint.cli.output import check_out_dir, console, esc, print_json, progress_bar
from genprint.cli.ray_options import (
    DEFAULT_RAY_ACTORS,
    RayAddressOption,
    RayBackboneActorsOption,
    check_ray_options,
)
from genprint.cli.train import (
    BenchOption,
    DataOption,
    JsonOption,
    OutOption,
    OverwriteOption,
    ProtocolOption,
    SourcesOption,
    TargetAcceptOption,
    ValFractionOption,
    data_provenance,
    no_training_images,
    report_bad_files,
    report_data_warnings,
    skipped_rows,
    sources_phrase,
    train_app,
    training_items,
)


def print_layer_table(rows: list[dict[str, Any]]) -> None:
    """The per-layer validation table, on the console (stderr)."""
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    table = Table(title="validation per layer (test metrics: genprint eval)")
    for col in ("layer", "dim", "hp", "accuracy", "macro-F1", "OvR AUROC", "LOSO AUROC",
                "criterion", ""):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in rows:
        table.add_row(r["layer"], str(r["dim"]), f"{r['hp']:g}", fmt(r["val_accuracy"]),
                      fmt(r["val_macro_f1"]), fmt(r["val_ovr_auroc"]), fmt(r["val_loso_auroc"]),
                      fmt(r["criterion"]), "← chosen" if r["chosen"] else "")
    console.print(table)


def _layer(value: str) -> str | int:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter("give 'auto' or a layer index", param_hint="--layer") from None


@train_app.command("probe")
def train_probe_cmd(
    out: OutOption,
    data: DataOption = None,
    bench: BenchOption = None,
    protocol: ProtocolOption = "all",
    backbone: Annotated[str, typer.Option(help="A registered backbone (dinov2-s14-onnx, "
                                               "efficientnet-lite0, forensic-cnn, ...) or a local "
                                               "path: an open_clip checkpoint file, a "
                                               "transformers model folder or Hugging Face cache "
                                               "entry.")] = "dinov2-s14-onnx",
    backbone_model: Annotated[str | None, typer.Option(help="open_clip model name of a "
                                                            "checkpoint file, e.g. "
                                                            "ViT-B-16-quickgelu (sets the "
                                                            "activation).")] = None,
    input_size: Annotated[int | None, typer.Option(min=1, help="Backbone input side (default: the "
                                                        "largest valid one that fits every "
                                                        "image but the smallest 5% at most, "
                                                        "or with --pad the backbone's "
                                                        "native size; never upsampled).")] = None,
    pad: Annotated[str, typer.Option(help="none (images are centre-cropped to the largest "
                                          "valid input that fits), or wrap / reflect: images "
                                          "smaller than the backbone's input (--input-size, "
                                          "else its native one) are padded up to it by "
                                          "periodic repetition / mirroring; pixels are never "
                                          "interpolated.")] = "none",
    head: Annotated[str, typer.Option(help="logreg or knn.")] = "logreg",
    layer: Annotated[str, typer.Option(help="auto (chosen on validation) or a layer index "
                                            "(negative counts from the end).")] = "auto",
    score: Annotated[str | None, typer.Option(help="Open-set score: msp, maxlogit, energy, knn "
                                                   "or mahalanobis (default: msp for logreg, "
                                                   "knn for knn).")] = None,
    layer_select: Annotated[str, typer.Option(help="How --layer auto chooses: balanced (mean of "
                                                   "validation accuracy and leave-one-source-out "
                                                   "AUROC), accuracy, or loso.")] = "balanced",
    per_class: Annotated[int | None, typer.Option(help="Use at most N training images per "
                                                       "source (low-data regime).")] = None,
    target_accept: TargetAcceptOption = 0.95,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per backbone batch.")] = 64,
    cache: Annotated[bool, typer.Option(help="Cache features on disk.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache folder (default "
                                                        "$GENPRINT_CACHE/features, else "
                                                        "$XDG_CACHE_HOME/genprint/features, "
                                                        "i.e. ~/.cache/genprint/features)."
                                                   )] = None,
    val_fraction: ValFractionOption = 0.2,
    sources: SourcesOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the split and the per-class subset.")] = 0,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
    ray: Annotated[bool, typer.Option(
        "--ray", help="Read the images and extract their features on Ray Data (pip install "
                      "'genprint\\[ray]'): a pool of actors, each holding the backbone, on a "
                      "local Ray or a cluster (--ray-address); the heads are fitted here. Same "
                      "model as without it; the images (and a backbone given as a path) must "
                      "be at the same paths on every node.")] = False,
    ray_address: RayAddressOption = None,
    ray_actors: RayBackboneActorsOption = None,
    keep_decoded_mb: Annotated[int | None, typer.Option(
        min=0, help="Decoded pixels (MiB) the first reading pass keeps for the feature pass "
                    "(default 1024): data up to that size is decoded once; beyond it the rest "
                    "is decoded again, so memory stays bounded. 0 keeps none (least memory, "
                    "about 1.5x the time). Same model either way. Local fits only.")] = None,
) -> None:
    """Fit the `probe` method: a frozen backbone's features of every block, a logistic-regression
    or k-NN head per block, the block and hyperparameters chosen on validation, and per-source
    thresholds accepting --target-accept of each source's validation images."""
    from genprint.methods.fitting import fit_on_items
    from genprint.methods.probe import ProbeAttributor, cap_per_class
    from genprint.methods.two_pass import FilesChangedError

    check_ray_options(ray, ray_address, ray_actors)
    if ray and keep_decoded_mb is not None:
        raise typer.BadParameter("applies to local fits only: with --ray, the actors read "
                                 "every file again in the feature pass",
                                 param_hint="--keep-decoded-mb")
    check_out_dir(out, overwrite)
    options = {"model_name": backbone_model} if backbone_model else {}
    try:
        model = ProbeAttributor(
            backbone=backbone, backbone_options=options, input_size=input_size, pad=pad,
            head=head,
            layer=_layer(layer), score=score, per_class=per_class, target_accept=target_accept,
            layer_select=layer_select, batch_size=batch_size, cache=cache,
            cache_dir=str(cache_dir) if cache_dir else None, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    split_info: dict[str, object] = {}
    train_items, val_items = training_items(data, bench, protocol, val_fraction, seed, sources,
                                            split_info)
    if not train_items:
        raise no_training_images(data)
    model.training_info_ = {
        **data_provenance(data, bench, protocol, split_info),
        "threshold_rule": f"per source, accepts {target_accept:.0%} of its validation images",
    }
    total = len(cap_per_class([i.source for i in train_items], per_class, seed)) + len(val_items)
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        try:
            if ray:
                errors = _fit_on_ray(model, train_items, val_items, bar, total, ray_address,
                                     ray_actors or DEFAULT_RAY_ACTORS)
            else:
                reading = bar.add_task("reading images", total=len(train_items) + len(val_items))
                task = bar.add_task("extracting features", total=total)
                model.on_progress = lambda n: bar.advance(task, n)
                errors = fit_on_items(
                    model, train_items, val_items, on_read=lambda n: bar.advance(reading, n),
                    keep_decoded_bytes=None if keep_decoded_mb is None
                    else keep_decoded_mb << 20)
        except FilesChangedError as exc:  # not a bad option: the data moved under the fit
            console.print(f"[red]error:[/red] {esc(str(exc))}")
            raise typer.Exit(2) from None
        except (ValueError, FileNotFoundError, ImportError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--backbone" if isinstance(
                exc, (FileNotFoundError, ImportError)) else None) from None
    report_bad_files(errors)
    report_data_warnings(model)
    model.save(out, overwrite=overwrite)
    info = model.training_info_
    rows = model.layer_table()
    summary = {
        "method": "probe", "out": str(out), "classes": model.classes_,
        "backbone": model.backbone_spec_["name"], "input_size": model.backbone_spec_["input_size"],
        "pad": model.pad, "min_image_side": model.min_size,
        "head": model.head, "score": model.score, "layer": model.layer_name_,
        "hp": model.probe_.hp,
        "thresholds": dict(zip(model.classes_, map(float, model.thresholds_), strict=True)),
        **{k: info.get(k) for k in ("n_train", "n_val", "n_skipped", "n_train_used", "protocol",
                                    "val_accuracy", "val_loso_auroc", "warnings")},
        "skipped": skipped_rows(errors),
        "layers": rows,
    }
    if json_out:
        print_json(summary)
        return
    print_layer_table(rows)
    console.print(f"[green]saved[/green] {esc(str(out))}: {sources_phrase(len(model.classes_))}, "
                  f"{info['n_train_used']} training and {info['n_val']} validation images, "
                  f"layer {model.layer_name_} ({model.head}, hp {model.probe_.hp:g}, "
                  f"score {model.score}), validation accuracy {info['val_accuracy']:.3f}")


def _fit_on_ray(model: Any, train_items: list, val_items: list, bar: Any, total: int,
                address: str | None, actors: int) -> list:
    """``--ray``: :func:`genprint.scale.fit_probe_on_ray`, with a bar per pass; Ray missing,
    unreachable or failing is a clean exit 2. The actors import the plugin modules this
    process imported (``--plugin``, ``GENPRINT_PLUGINS``)."""
    from genprint.plugins import loaded_plugin_specs
    from genprint.scale import ScaleError, fit_probe_on_ray

    reading = bar.add_task("reading images (Ray)", total=len(train_items) + len(val_items))
    extracting = bar.add_task("extracting features (Ray)", total=total)
    try:
        return fit_probe_on_ray(model, train_items, val_items, address=address, actors=actors,
                                plugins=loaded_plugin_specs(),
                                on_read=lambda n: bar.advance(reading, n),
                                on_progress=lambda n: bar.advance(extracting, n))
    except ScaleError as exc:
        console.print(f"[red]error:[/red] {esc(str(exc))}")
        raise typer.Exit(2) from None
