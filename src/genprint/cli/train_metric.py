"""``genprint train metric``: forensic embeddings with reference points (Fang et al., 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.output import check_out_dir, console, esc, print_json, progress_bar
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


@train_app.command("metric")
def train_metric_cmd(
    out: OutOption,
    data: DataOption = None,
    bench: BenchOption = None,
    protocol: ProtocolOption = "all",
    init: Annotated[str, typer.Option(help="camera: start from a camera-identification "
                                           "checkpoint; scratch: random initialisation.")] = "camera",
    camera_ckpt: Annotated[Path | None, typer.Option(help="Checkpoint of `genprint pretrain "
                                                          "camera` (default: the shipped one).")
                           ] = None,
    loss: Annotated[str, typer.Option(help="proxy-anchor, multi-similarity, arcface, supcon, "
                                           "nca, or one you registered in METRIC_LOSSES.")
                    ] = "proxy-anchor",
    references: Annotated[str, typer.Option(help="Reference points: kmeans (centroids of the "
                                                 "training embeddings) or proxies (learned by "
                                                 "proxy-anchor / arcface).")] = "kmeans",
    refs_per_class: Annotated[int, typer.Option(help="Reference points per source (K).")] = 8,
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 60,
    batch_size: Annotated[int, typer.Option(min=2, help="Patches per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule).")] = 2e-3,
    width: Annotated[int | None, typer.Option(help="First-stage channels (scratch; default 16; "
                                                   "camera init uses the checkpoint's).")] = None,
    embedding_dim: Annotated[int | None, typer.Option(help="Embedding dimension (scratch; "
                                                           "default 128).")] = None,
    patch_size: Annotated[int | None, typer.Option(help="Patch / tile side (scratch; default "
                                                        "32).")] = None,
    max_tiles: Annotated[int, typer.Option(help="Most tiles used per image at inference.")] = 16,
    origin_classes: Annotated[bool, typer.Option(help="Train one loss class per (source, origin) "
                                                      "where the manifest names an origin (the "
                                                      "bench's real images: their camera).")
                              ] = True,
    unseen_origin_thresholds: Annotated[bool, typer.Option(
        help="Calibrate the threshold of a source with several origins as if each validation "
             "image's origin were unseen: real images from new cameras are accepted more "
             "often, and unknown generators pass as real more often too (docs/metric.md).")
    ] = False,
    pseudo_sources: Annotated[int, typer.Option(
        help="Extra loss classes re-synthesised from training images through random upsampling "
             "operators (opt-in; no gain in enrolment on validation, docs/metric.md).")] = 0,
    symmetries: Annotated[str, typer.Option(
        help="none, flips or dihedral: train on a random pixel-exact flip / quarter turn of "
             "each crop and average the views at inference (opt-in; on validation dihedral "
             "raised enrolment recall and lowered AUROC, docs/metric.md).")] = "none",
    residual_weight: Annotated[float | None, typer.Option(
        help="Weight of 60 training-free residual statistics (noise level, interpolation and "
             "colour-filter traces, spectrum) joined to the learned embedding; 0 = the "
             "embedding alone. Default: 0.5 with k-means reference points, 0 with proxies "
             "(docs/metric.md, \"Residual statistics\").", show_default=False)] = None,
    augment: Annotated[str, typer.Option(
        help="none or jpeg: re-save half of the training crops as JPEG (quality 60-95) so that "
             "the embedding learns to see through re-compression (opt-in; figures in "
             "docs/metric.md, \"JPEG augmentation\").")] = "none",
    target_accept: TargetAcceptOption = 0.95,
    val_fraction: ValFractionOption = 0.2,
    sources: SourcesOption = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, crops and the split.")] = 0,
    overwrite: OverwriteOption = False,
    json_out: JsonOption = False,
) -> None:
    """Fit the `metric` method: a forensic CNN trained with a metric-learning loss, reference
    points per source and distance thresholds calibrated on validation images."""
    from genprint.methods.camera_pretrain import checkpoint_architecture, default_camera_checkpoint
    from genprint.methods.fitting import fit_on_items
    from genprint.methods.metric import (
        INITS,
        MAX_RESIDUAL_WEIGHT,
        MetricAttributor,
        weight_problem,
    )
    from genprint.methods.metric_train import AUGMENTATIONS, SYMMETRIES
    from genprint.storage.model_dir import ModelFormatError

    if init not in INITS:
        raise typer.BadParameter(f"choose one of {', '.join(INITS)}", param_hint="--init")
    if symmetries not in SYMMETRIES:
        raise typer.BadParameter(f"choose one of {', '.join(SYMMETRIES)}",
                                 param_hint="--symmetries")
    if augment not in AUGMENTATIONS:
        raise typer.BadParameter(f"choose one of {', '.join(AUGMENTATIONS)}",
                                 param_hint="--augment")
    if weight_problem(residual_weight):
        raise typer.BadParameter(f"must be a number from 0 to {MAX_RESIDUAL_WEIGHT:g}",
                                 param_hint="--residual-weight")
    if residual_weight and references == "proxies":
        raise typer.BadParameter("residual statistics need k-means reference points (the "
                                 "proxies live in the network's space); leave it out or use 0",
                                 param_hint="--residual-weight")
    arch = {"width": width or 16, "embedding_dim": embedding_dim or 128,
            "patch_size": patch_size or 32, "blocks": 1}
    if init == "camera":
        ckpt = camera_ckpt or default_camera_checkpoint()
        if ckpt is None:
            raise typer.BadParameter("no camera checkpoint: build one with `genprint pretrain "
                                     "camera` and pass --camera-ckpt, or use --init scratch",
                                     param_hint="--camera-ckpt")
        try:
            cfg = checkpoint_architecture(ckpt)
        except ModelFormatError as exc:
            raise typer.BadParameter(str(exc), param_hint="--camera-ckpt") from None
        arch = {"width": cfg.width, "embedding_dim": cfg.embedding_dim,
                "patch_size": cfg.patch_size, "blocks": cfg.blocks}
        camera_ckpt = Path(ckpt)
    check_out_dir(out, overwrite)  # after the options' checks: a bad option creates nothing
    split_info: dict[str, object] = {}
    train_items, val_items = training_items(data, bench, protocol, val_fraction, seed, sources,
                                            split_info)
    if not train_items:
        raise no_training_images(data)
    model = MetricAttributor(
        **arch, loss=loss, references=references, refs_per_class=refs_per_class, epochs=epochs,
        batch_size=batch_size, lr=lr, init=init,
        camera_ckpt=str(camera_ckpt) if init == "camera" else None,
        target_accept=target_accept, max_tiles=max_tiles, origin_classes=origin_classes,
        unseen_origin_thresholds=unseen_origin_thresholds, pseudo_sources=pseudo_sources,
        symmetries=symmetries, residual_weight=residual_weight, augment=augment, seed=seed)
    model.training_info_ = data_provenance(data, bench, protocol, split_info)
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        task = bar.add_task("metric training (epochs)", total=epochs)
        model.on_epoch = lambda e, value: bar.update(
            task, completed=e, description=f"metric training, loss {value:.3f}")
        try:
            errors = fit_on_items(model, train_items, val_items)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    report_bad_files(errors)
    report_data_warnings(model)
    model.save(out, overwrite=overwrite)
    info = model.training_info_
    summary = {
        "method": "metric", "out": str(out), "classes": model.classes_,
        "thresholds": dict(zip(model.classes_, map(float, model.thresholds_), strict=True)),
        **{k: info.get(k) for k in ("n_train", "n_val", "n_skipped", "protocol", "init", "loss",
                                    "reference_points", "residual_weight", "augment",
                                    "train_seconds",
                                    "val_closed_set_accuracy", "warnings")},
        "skipped": skipped_rows(errors),
    }
    if json_out:
        print_json(summary)
    else:
        console.print(f"[green]saved[/green] {esc(str(out))}: {sources_phrase(len(model.classes_))}, "
                      f"{summary['n_train']} training and {summary['n_val']} validation images, "
                      f"validation accuracy {info['val_closed_set_accuracy']:.3f}")
