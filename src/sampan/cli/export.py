"""`sampan export`: a package in a portable format, as a new version with a parity report."""

from __future__ import annotations

import typer

from sampan.progress import console


def export(
    package: str = typer.Argument(..., help="NAME, NAME@latest or NAME@3."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="Export format."),
    opset: int = typer.Option(18, help="ONNX opset."),
    data: str = typer.Option(
        None, help="Labelled data for the parity check [default: the package's validation split]."
    ),
    atol: float = typer.Option(
        1e-3,
        help="Largest allowed difference of outputs: absolute for class scores, relative to "
        "each sample's largest output for forecasts and anomaly scores.",
    ),
    name: str = typer.Option(None, help="Write under this package name [default: the same]."),
) -> None:
    """Export a package (ONNX, dynamic batch axis) and check it against the original."""
    from sampan.export import export as run_export

    exported = run_export(package, fmt, name=name, opset=opset, data=data, atol=atol)
    report = exported.manifest.exports[fmt]["parity"]
    if "max_rel_diff" in report:  # readings, not classes
        agreement = f"max relative diff {report['max_rel_diff']:.2e}"
    elif "top1_agreement" in report:
        agreement = f"top-1 agreement {report['top1_agreement']:.4f}"
    else:
        agreement = f"lowest cosine {report['min_cosine']:.6f}"
    console.print(
        f"parity on {report['samples']} real samples: max abs diff "
        f"{report['max_abs_diff']:.2e}, {agreement}"
    )
    console.print(f"Package [bold]{exported.ref}[/] ({fmt}) written to {exported.path}")
