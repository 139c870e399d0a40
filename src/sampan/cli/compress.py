"""`sampan compress`: an INT8 version of a package, refused if it loses too much accuracy."""

from __future__ import annotations

import typer

from sampan.progress import console


def compress(
    package: str = typer.Argument(..., help="A package with an fp32 ONNX export."),
    int8: bool = typer.Option(False, "--int8", help="Quantize to INT8 (the default)."),
    fp16: bool = typer.Option(False, "--fp16", help="Convert to fp16 instead (for GPUs)."),
    method: str = typer.Option(
        None,
        help="INT8 method: static (calibrated, convnets) or dynamic (linear-heavy, text) "
        "[default: static for images, dynamic for text].",
        show_default=False,
    ),
    calib: str = typer.Option(None, help="Calibration data [default: the training split]."),
    samples: int = typer.Option(256, help="Calibration samples."),
    data: str = typer.Option(
        None,
        help="Labelled data for accuracy before/after [default: the validation split; for a "
        "pretrained text-embedding package, sampan's bundled industrial pairs].",
    ),
    max_drop: float = typer.Option(
        1.0, help="Largest allowed drop of accuracy (Spearman for embeddings), in points."
    ),
    force: bool = typer.Option(False, help="Write it even past --max-drop."),
    name: str = typer.Option(None, help="Write under this package name [default: the same]."),
) -> None:
    """Quantize a package's ONNX export to INT8 (or fp16); record accuracy and size before and
    after."""
    from sampan.compress import compress as run_compress
    from sampan.errors import ConfigError

    if int8 and fp16:
        raise ConfigError("Choose one of --int8 and --fp16.")
    method = "fp16" if fp16 else method

    result = run_compress(
        package,
        method=method,
        calib=calib,
        data=data,
        samples=samples,
        max_drop=max_drop / 100,
        force=force,
        name=name,
    )
    entry = result.manifest.exports["onnx"]
    monitor = next(
        k.removesuffix("_before")
        for k in entry
        if k.endswith("_before") and not k.startswith("size")
    )
    console.print(
        f"{monitor}: {entry[f'{monitor}_before']:.4f} -> {entry[f'{monitor}_after']:.4f}"
        f"; size: {entry['size_before_bytes'] / 1e6:.2f} MB -> "
        f"{entry['size_after_bytes'] / 1e6:.2f} MB"
    )
    console.print(
        f"Package [bold]{result.ref}[/] ({entry['precision'].upper()}) written to {result.path}"
    )
