"""`sampan serve`: packages from the store behind HTTP (native REST, Open Inference v2)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

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
    lone_spin: bool = typer.Option(
        True,
        help="Without --spin, run one-row batches (a lone caller) on a second onnxruntime "
        "session whose threads spin: lower latency at low load, for the model's memory again "
        "(models up to 256 MB).",
    ),
    max_batch_size: int = typer.Option(32, help="Most rows per batch."),
    max_wait_ms: float = typer.Option(2.0, help="Longest wait for a batch to fill (under load)."),
    max_queue: int = typer.Option(256, help="Requests that may wait; more get 503."),
    model_settings: Path = typer.Option(
        None,
        help="A YAML file of per-model settings over these: NAME: {max_batch_size: 8, "
        "max_wait_ms: 5, max_queue: 64, timeout_s: 10, instances: 2, threads: 1, backend: "
        "onnxruntime, device: cpu}.",
    ),
    timeout: float = typer.Option(30.0, help="Seconds a request may wait before 504."),
    max_body_mb: float = typer.Option(
        16.0, help="Largest request body in MiB; a larger one gets 413."
    ),
    ssl_certfile: Path = typer.Option(
        None, help="Serve HTTPS with this PEM certificate (its chain after it); with --ssl-keyfile."
    ),
    ssl_keyfile: Path = typer.Option(None, help="The PEM private key of --ssl-certfile."),
    log_level: str = typer.Option("info", help="debug, info, warning."),
    auth: str = typer.Option(
        "auto",
        help="keys: every call needs an API key (sampan keys create); open: none needed, "
        "calls metered; off: no keys, no metering (loopback only); auto: keys once any key "
        "exists, else open.",
    ),
    insecure_open: bool = typer.Option(
        False, "--insecure-open", help="Allow --auth open on an address other than loopback."
    ),
    admin_token: str = typer.Option(
        None,
        envvar="SAMPAN_ADMIN_TOKEN",
        help="Turn on /v1/admin/models (load and unload at run time) for callers that send "
        "this token as a Bearer token.",
        show_default=False,
    ),
    cors_origin: list[str] = typer.Option(
        None,
        "--cors-origin",
        help="Let browser pages of this origin call the API (CORS), e.g. "
        "https://dashboard.example.com; repeat for more, * for any.",
    ),
    web_console: bool = typer.Option(
        True, "--console/--no-console", help="Serve the web console at /console."
    ),
) -> None:
    """Serve models with dynamic batching, metrics at /metrics and OpenAPI at /openapi.json."""
    import logging

    import uvicorn

    from sampan.errors import ConfigError
    from sampan.serving.app import build_app
    from sampan.serving.drain import DrainingServer
    from sampan.serving.host import ModelSettings, ServeSettings, load_model_settings
    from sampan.store import Store

    store = Store()
    example = None  # for the starter: (an image to send, the model's route)
    if starter:
        from sampan.progress import console
        from sampan.starter import STARTER, ensure_starter, starter_data

        package = ensure_starter(store, console)
        refs = [package.ref, *[m for m in (models or "").split(",") if m.strip()]]
        image = sorted(starter_data(store)[1].glob("*/*.png"))[0]
        example = image, f"/v1/models/{STARTER}:predict"
    elif all_models:
        refs = store.names()
    elif models:
        refs = [m.strip() for m in models.split(",") if m.strip()]
    else:
        raise ConfigError("Name the models to serve with --models NAME[@VERSION],... or --all.")
    if not refs:
        raise ConfigError(f"No packages in {store.root} to serve; train one first.")
    # fail here, in one line, rather than inside the server's startup
    names = {store.open(ref).manifest.name for ref in refs}
    per_model = load_model_settings(model_settings) if model_settings else {}
    unknown = sorted(set(per_model) - names - set(store.names()))
    if unknown:
        raise ConfigError(
            f"--model-settings names {', '.join(unknown)}: no such model here (serving "
            f"{', '.join(sorted(names))}; the store holds {', '.join(store.names()) or 'none'})."
        )
    if not (0.001 <= max_body_mb <= 4096):  # also false for NaN
        raise ConfigError(
            f"--max-body-mb must be at least 0.001 (1 KiB) and at most 4096 (got {max_body_mb})."
        )
    if cors_origin:
        from sampan.serving.app import cors_middleware

        cors_middleware(cors_origin)  # checked before anything opens
    certfile, keyfile = _tls(ssl_certfile, ssl_keyfile)
    scheme = "https" if certfile else "http"
    settings = ServeSettings(
        backend=backend,
        device=device,
        instances=instances,
        threads=threads,
        spin=spin,
        lone_spin=lone_spin,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        timeout_s=timeout,
        admin_token=admin_token or None,
        max_body_bytes=int(max_body_mb * 2**20),
        cors_origins=tuple(cors_origin or ()),
        models=per_model,
    )
    try:
        ModelSettings.of(settings).validate()
    except ConfigError as exc:  # the flags' own names
        raise ConfigError(f"Invalid serve options: {exc}".replace("timeout_s", "timeout")) from None
    # long enough for the slowest model's requests in flight to finish
    longest = max([timeout, *(s.timeout_s for s in per_model.values() if s.timeout_s)])
    gate, notice = _gate(auth, host, insecure_open)
    routers = []
    if web_console:
        from sampan.console import console_router

        routers.append(console_router(store))
    app = build_app(refs, settings, store, extension=gate, routers=routers)
    logging.basicConfig(level=log_level.upper(), format="%(message)s")
    url = f"{scheme}://{host}:{port}"
    print(
        f"Serving {', '.join(refs)} at {url}  (OpenAPI: /docs, metrics: "
        "/metrics; Ctrl-C or SIGTERM drains and stops)"
    )
    print(notice)
    if web_console:
        print(f"Console: {url}/console")
    if example:
        needs_key = gate is not None and not gate.open
        print(
            f"Try it: curl -F file=@{example[0]} {url}{example[1]}"
            + (' -H "Authorization: Bearer smp_..."' if needs_key else "")
        )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=int(longest) + 5,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    # SIGTERM: readiness 503 and new requests refused while the batches in flight finish,
    # then uvicorn stops (see sampan.serving.drain)
    server = DrainingServer(config, app.state.host, timeout_s=longest)
    with contextlib.suppress(KeyboardInterrupt):  # should uvicorn re-raise a drained Ctrl-C
        server.run()
    if not server.started:  # as uvicorn.run exits: the reason (a model, the port) is logged
        raise SystemExit(3)


def _tls(certfile: Path | None, keyfile: Path | None) -> tuple[str | None, str | None]:
    """uvicorn's HTTPS files (None, None: plain HTTP), the pair checked here: a bad file, or a
    key that is not the certificate's, is one line before any model loads, not a traceback
    from uvicorn."""
    import ssl

    from sampan.errors import ConfigError

    if certfile is None and keyfile is None:
        return None, None
    if certfile is None or keyfile is None:
        raise ConfigError("HTTPS needs both --ssl-certfile and --ssl-keyfile.")
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not path.is_file():
            raise ConfigError(f"{flag} {path}: no such file.")
    try:
        # no password: an encrypted key fails here rather than prompting on the terminal
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            certfile, keyfile, password=lambda: b""
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"Cannot serve HTTPS with --ssl-certfile {certfile} and --ssl-keyfile {keyfile}: "
            f"{exc.strerror or exc} (both PEM; the key must be the certificate's, unencrypted)."
        ) from None
    return str(certfile), str(keyfile)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _gate(auth: str, host: str, insecure_open: bool) -> tuple[Any, str]:
    """The platform gate for this server, and a line saying how calls are let in."""
    import os

    from sampan.errors import ConfigError
    from sampan.platform.db import Database
    from sampan.platform.gate import build_gate

    if auth not in ("auto", "keys", "open", "off"):
        raise ConfigError(f"--auth {auth!r}: choose auto, keys, open or off.")
    if auth == "off":
        if host not in LOOPBACK:
            raise ConfigError("--auth off serves loopback only; use --auth open or keys.")
        return None, "No API keys and no usage metering (--auth off)."
    db = Database()
    if auth == "auto":
        from sampan.platform.keys import Keys

        auth = "keys" if Keys(db).count_active() else "open"
    if auth == "open" and host not in LOOPBACK and not insecure_open:
        db.close()
        raise ConfigError(
            f"Refusing to serve {host} with no API keys: create one (sampan apps create APP; "
            "sampan keys create --app APP --scope 'predict:*'), or pass --insecure-open."
        )
    redis_url = os.environ.get("SAMPAN_REDIS_URL") or None
    gate = build_gate(db, redis_url, open=auth == "open")
    limits = "Redis" if redis_url else db.safe_url
    if auth == "open":
        why = "--auth open" if host in LOOPBACK else "--insecure-open"
        return gate, (
            f"Open for local development: no API key needed ({why} or no keys yet); calls "
            f"are metered in {db.safe_url}. Create keys to require them."
        )
    return gate, f"API keys required; limits and quotas through {limits}, usage in {db.safe_url}."
