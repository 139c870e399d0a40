"""`sampan serve`: packages from the store behind HTTP (native REST, Open Inference v2)."""

from __future__ import annotations

import typer


def serve(
    models: str = typer.Option(None, help="NAME[@VERSION],... to serve."),
    all_models: bool = typer.Option(False, "--all", help="Serve the latest of every package."),
    starter: bool = typer.Option(
        False, "--starter", help="Serve the digits starter model (built on first start)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    backend: str = typer.Option("auto", help="auto, torch, onnxruntime, openvino."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, ..."),
    instances: int = typer.Option(1, help="Engine instances per model."),
    threads: int = typer.Option(
        None, help="Threads per engine instance [default: the backend's own, all cores]."
    ),
    spin: bool = typer.Option(
        False, help="Let onnxruntime's threads busy-wait between batches (off: cores for I/O)."
    ),
    max_batch_size: int = typer.Option(32, help="Most rows per batch."),
    max_wait_ms: float = typer.Option(2.0, help="Longest wait for a batch to fill (under load)."),
    max_queue: int = typer.Option(256, help="Requests that may wait; more get 503."),
    timeout: float = typer.Option(30.0, help="Seconds a request may wait before 504."),
    log_level: str = typer.Option("info", help="debug, info, warning."),
    admin_token: str = typer.Option(
        None,
        envvar="SAMPAN_ADMIN_TOKEN",
        help="Turn on /v1/admin/models (load and unload at run time) for callers that send "
        "this token as a Bearer token.",
        show_default=False,
    ),
) -> None:
    """Serve models with dynamic batching, metrics at /metrics and OpenAPI at /openapi.json."""
    import logging

    import uvicorn

    from sampan.errors import ConfigError
    from sampan.serving.app import build_app
    from sampan.serving.host import ServeSettings
    from sampan.store import Store

    store = Store()
    example = None
    if starter:
        from sampan.progress import console
        from sampan.starter import STARTER, ensure_starter, starter_data

        package = ensure_starter(store, console)
        refs = [package.ref, *[m for m in (models or "").split(",") if m.strip()]]
        image = sorted(starter_data(store)[1].glob("*/*.png"))[0]
        example = f"curl -F file=@{image} http://{host}:{port}/v1/models/{STARTER}:predict"
    elif all_models:
        refs = store.names()
    elif models:
        refs = [m.strip() for m in models.split(",") if m.strip()]
    else:
        raise ConfigError("Name the models to serve with --models NAME[@VERSION],... or --all.")
    if not refs:
        raise ConfigError(f"No packages in {store.root} to serve; train one first.")
    for ref in refs:
        store.open(ref)  # fail here, in one line, rather than inside the server's startup
    if instances < 1:
        raise ConfigError("--instances must be >= 1.")
    if threads is not None and threads < 1:
        raise ConfigError("--threads must be >= 1.")
    settings = ServeSettings(
        backend=backend,
        device=device,
        instances=instances,
        threads=threads,
        spin=spin,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        timeout_s=timeout,
        admin_token=admin_token or None,
    )
    app = build_app(refs, settings, store)
    logging.basicConfig(level=log_level.upper(), format="%(message)s")
    print(
        f"Serving {', '.join(refs)} at http://{host}:{port}  (OpenAPI: /docs, metrics: "
        "/metrics; Ctrl-C or SIGTERM drains and stops)"
    )
    if example:
        print(f"Try it: {example}")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(timeout) + 5,
    )
