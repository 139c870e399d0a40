"""`sampan apps ...`, `sampan keys ...`, `sampan usage`: the open API platform's state."""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from sampan.progress import console

if TYPE_CHECKING:
    from sampan.platform.keys import Keys

apps = typer.Typer(help="Apps (tenants) that call the API.", no_args_is_help=True)
keys = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)


@contextlib.contextmanager
def _keys() -> Iterator[Keys]:
    from sampan.platform.db import Database
    from sampan.platform.keys import Keys

    with Database() as db:
        yield Keys(db, actor="cli")


@apps.command("create")
def create_app(
    name: str = typer.Argument(..., help="The app's name."),
    description: str = typer.Option("", help="What it is."),
) -> None:
    """Create an app; then give it keys with `sampan keys create --app NAME`."""
    with _keys() as admin:
        admin.create_app(name, description)
    console.print(f"App [bold]{name}[/] created. Next: sampan keys create --app {name}")


@apps.command("list")
def list_apps() -> None:
    """Every app and its number of active keys."""
    with _keys() as admin:
        rows = admin.list_apps()
    if not rows:
        console.print("No apps yet: sampan apps create NAME")
        return
    table = Table(title="Apps")
    for col in ("app", "active keys", "created", "description"):
        table.add_column(col)
    for row in rows:
        created = f"{row['created_at']:%Y-%m-%d %H:%M}"
        table.add_row(row["name"], str(row["active_keys"]), created, row["description"])
    console.print(table)


@keys.command("create")
def create_key(
    app: str = typer.Option(..., help="The app that owns the key."),
    scope: list[str] = typer.Option(
        ..., help="predict:<model pattern> (e.g. 'predict:digits*') or admin; repeatable."
    ),
    rate: str = typer.Option(None, help="Rate limit, e.g. 20/s or 600/min."),
    burst: int = typer.Option(None, help="Calls allowed at once above the rate [default: 1 s]."),
    quota: list[str] = typer.Option(None, help="10000/day and/or 300000/month; repeatable."),
    expires: str = typer.Option(None, help="30d, 12h or a date such as 2027-01-31."),
    name: str = typer.Option("", help="A label for the key."),
    quota_units: str = typer.Option(
        "requests", help="What quotas count: requests, or units (images, tokens) of the task."
    ),
    quota_model: str = typer.Option(
        None, help="Quotas count only calls to models matching this pattern."
    ),
) -> None:
    """Create a key. It is printed once, here: store it now."""
    with _keys() as admin:
        key, record = admin.create_key(
            app,
            scope,
            rate=rate,
            burst=burst,
            quotas=quota,
            expires=expires,
            name=name,
            quota_units=quota_units,
            quota_model=quota_model,
        )
    console.print(f"Key [bold]{record['prefix']}[/] for app {app} (scopes: {', '.join(scope)})")
    console.print("Store it now; it is not shown again:")
    print(key)


@keys.command("list")
def list_keys(app: str = typer.Option(None, help="Only this app's keys.")) -> None:
    """Keys by prefix (never the secret), with scopes, limits and state."""
    with _keys() as admin:
        rows = admin.list_keys(app)
    if not rows:
        console.print("No keys yet: sampan keys create --app APP --scope 'predict:*'")
        return
    table = Table(title="API keys")
    for col in ("prefix", "app", "scopes", "rate", "quotas", "expires", "state"):
        table.add_column(col, overflow="fold", no_wrap=col == "prefix")
    for r in rows:
        quotas = ", ".join(
            f"{r[f'quota_{p}']}/{p}" for p in ("day", "month") if r[f"quota_{p}"] is not None
        )
        if quotas and r["quota_units"] == "units":
            quotas += " units"
        if quotas and r["quota_model"]:
            quotas += f" of {r['quota_model']}"
        rate = f"{r['rate_per_s']:g}/s (burst {r['burst']})" if r["rate_per_s"] else "-"
        expires = f"{r['expires_at']:%Y-%m-%d %H:%M}" if r["expires_at"] else "never"
        state = "revoked" if r["revoked_at"] else "active"
        table.add_row(
            r["prefix"], r["app"], ", ".join(r["scopes"]), rate, quotas or "-", expires, state
        )
    console.print(table)


@keys.command("revoke")
def revoke(prefix: str = typer.Argument(..., help="The key's prefix (or the whole key).")) -> None:
    """Revoke a key: every server refuses it within 5 seconds."""
    with _keys() as admin:
        admin.revoke(prefix)
    console.print(f"Key {prefix.removeprefix('smp_').split('_')[0]} revoked.")


def usage(
    by: str = typer.Option("app", help="Group by app, key, model or day."),
    since: str = typer.Option("7d", help="7d, 24h, 30m or a date."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV on stdout instead of a table."),
) -> None:
    """Calls, units, refusals and latency from the usage records."""
    from sampan.platform.db import Database
    from sampan.platform.usage import usage_report

    with Database() as db:
        rows = usage_report(db, by=by, since=since)
    columns = [by, "calls", "ok", "refused", "errors", "units", "mean_ms", "max_ms"]
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        return
    if not rows:
        console.print(f"No calls recorded in the last {since}.")
        return
    table = Table(title=f"Usage by {by}, since {since}")
    for col in columns:
        table.add_column(col, justify="left" if col == by else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)
