"""``genprint pretrain camera``: camera-model-identification pretraining of the forensic CNN."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genprint.cli.app import app
from genprint.cli.output import check_out_dir, console, esc, print_json, progress_bar

pretrain_app = typer.Typer(help="Pretrain networks before attribution training.",
                           no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")


@pretrain_app.command("camera")
def pretrain_camera_cmd(
    bench: Annotated[Path, typer.Option(help="Camera benchmark from `genprint bench build DIR "
                                             "--task camera`.")],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 30,
    patch_size: Annotated[int, typer.Option(help="Patch side (random crops, never resized).")] = 32,
    width: Annotated[int, typer.Option(help="Channels of the first stage.")] = 16,
    blocks: Annotated[int, typer.Option(help="Residual blocks per stage.")] = 1,
    embedding_dim: Annotated[int, typer.Option(help="Embedding dimension.")] = 128,
    batch_size: Annotated[int, typer.Option(min=1, help="Patches per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate (AdamW, cosine schedule).")] = 2e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and crops.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing checkpoint.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Train the forensic CNN to tell the bench's camera models apart; save the checkpoint that
    `genprint train metric --init camera` starts from."""
    from genprint.backbones.forensic_cnn import ForensicCNNConfig
    from genprint.cli.train import report_bad_files, skipped_rows, training_items
    from genprint.io.batches import load_items
    from genprint.methods.camera_pretrain import pretrain_camera, save_camera_checkpoint

    check_out_dir(out, overwrite)
    train, val = training_items(None, bench, "camera", 0.2, seed, None)
    if not train:
        raise typer.BadParameter(f"{bench} holds no camera training images", param_hint="--bench")
    tr_imgs, tr_idx, tr_err = load_items([i.path for i in train], min_size=patch_size)
    va_imgs, va_idx, va_err = load_items([i.path for i in val], min_size=patch_size)
    report_bad_files(tr_err + va_err)
    config = ForensicCNNConfig(embedding_dim=embedding_dim, patch_size=patch_size, width=width,
                               blocks=blocks)
    with progress_bar(disable=json_out or not console.is_terminal) as bar:
        task = bar.add_task("camera pretraining (epochs)", total=epochs)
        try:
            result = pretrain_camera(
                tr_imgs, [train[k].source for k in tr_idx], va_imgs,
                [val[k].source for k in va_idx], config=config, epochs=epochs,
                batch_size=batch_size, lr=lr, seed=seed,
                on_epoch=lambda e, loss: bar.update(task, completed=e,
                                                    description=f"camera pretraining, loss "
                                                                f"{loss:.3f}"))
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    save_camera_checkpoint(result, out, overwrite=overwrite,
                           provenance={"bench": str(bench), "n_skipped": len(tr_err + va_err)})
    summary = {"out": str(out), "cameras": result.cameras,
               "architecture": config.to_dict(), **result.info,
               "skipped": skipped_rows(tr_err + va_err)}
    if json_out:
        print_json(summary)
    else:
        console.print(f"[green]saved[/green] {esc(str(out))}: {len(result.cameras)} cameras, "
                      "validation "
                      f"accuracy {result.info['val_accuracy']:.3f}")
