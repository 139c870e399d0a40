"""Apps and keys: creation, verification, scopes, revocation, expiry, and what is stored."""

from __future__ import annotations

import datetime as dt

import pytest

from sampan.errors import ConfigError, Forbidden, NotFoundError, Unauthorized
from sampan.platform.keys import Keys, parse_expiry, parse_quota, parse_rate


def test_a_key_is_shown_once_and_stored_only_as_a_hash(db):
    from sqlalchemy import text

    keys = Keys(db)
    keys.create_app("factory", "line 3 inspection")
    key, record = keys.create_key("factory", ["predict:digits*"], rate="20/s", quotas=["100/day"])
    assert key.startswith(f"smp_{record['prefix']}_") and "secret" not in record
    info = keys.verify(key)
    assert (info.app, info.quota_day, info.rate_per_s, info.burst) == ("factory", 100, 20.0, 20)
    secret = key.split("_", 2)[2]
    with db.engine.connect() as connection:
        for table in ("apps", "api_keys", "audit_log", "quota_counters", "usage"):
            dump = repr(connection.execute(text(f"SELECT * FROM {table}")).all())
            assert secret not in dump and key not in dump
    actions = [e["action"] for e in audit(db)]
    assert actions == ["app.create", "key.create"]


def audit(db):
    from sqlalchemy import select

    from sampan.platform.schema import AuditEntry

    with db.session() as session:
        return [
            {"action": e.action, "target": e.target, "actor": e.actor}
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def test_scopes_hold(db):
    keys = Keys(db)
    keys.create_app("bank")
    key, _ = keys.create_key("bank", ["predict:risk-*", "predict:ocr"])
    info = keys.verify(key)
    assert info.allows("predict:risk-retail") and info.allows("predict:ocr")
    assert not info.allows("predict:ocr2") and not info.allows("predict:fraud")
    assert not info.allows("admin")
    with pytest.raises(Forbidden, match="no scope for predict:fraud"):
        info.check("predict:fraud")
    admin_key, _ = keys.create_key("bank", ["admin"])
    assert Keys(db).verify(admin_key).allows("admin")


def test_revoked_expired_unknown_and_malformed_keys_are_refused(db):
    keys = Keys(db)
    keys.create_app("plant")
    key, record = keys.create_key("plant", ["predict:*"])
    keys.revoke(record["prefix"])
    with pytest.raises(Unauthorized, match="revoked"):
        keys.verify(key)
    old, _ = keys.create_key("plant", ["predict:*"], expires="2001-01-01")
    with pytest.raises(Unauthorized, match="expired"):
        keys.verify(old)
    soon, _ = keys.create_key("plant", ["predict:*"], expires="1h")
    keys.verify(soon)
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    with pytest.raises(Unauthorized, match="expired"):
        keys.verify(soon, now=later)
    fresh, _ = keys.create_key("plant", ["predict:*"])
    wrong_secret = fresh[:-1] + ("A" if fresh[-1] != "A" else "B")
    unknown_prefix = "smp_000000000000_" + fresh.split("_", 2)[2]
    for bad in (wrong_secret, unknown_prefix, "smp_nothing", ""):
        with pytest.raises(Unauthorized):
            keys.verify(bad)
    assert keys.count_active() == 2  # fresh and soon; the revoked and the expired do not count
    assert [e["action"] for e in audit(db)].count("key.revoke") == 1


def test_injection_shaped_strings_are_harmless(db):
    keys = Keys(db)
    keys.create_app("safe")
    for evil in ("x'; DROP TABLE apps; --", 'a" OR 1=1 --', "../../etc"):
        with pytest.raises(ConfigError):
            keys.create_app(evil)
        with pytest.raises(NotFoundError):
            keys.create_key(evil, ["predict:*"])
        with pytest.raises(Unauthorized):
            keys.verify(f"smp_{evil}")
        with pytest.raises(NotFoundError):
            keys.revoke(evil)
    with pytest.raises(ConfigError, match="Scope"):
        keys.create_key("safe", ["predict:x' OR '1'='1"])
    assert [a["name"] for a in keys.list_apps()] == ["safe"]


def test_limit_and_date_parsing():
    assert parse_rate("20/s") == 20 and parse_rate("600/min") == 10 and parse_rate("5") == 5
    assert parse_quota("10000/day") == ("day", 10000)
    assert parse_quota("300000/month") == ("month", 300000)
    for bad in ("fast", "0/s", "-1/s"):
        with pytest.raises(ConfigError, match="Rate"):
            parse_rate(bad)
    with pytest.raises(ConfigError, match="Quota"):
        parse_quota("100/week")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    assert parse_expiry("30d", now) == now + dt.timedelta(days=30)
    with pytest.raises(ConfigError, match="Expiry"):
        parse_expiry("soon")


def test_cli_manages_apps_and_keys(capsys, monkeypatch, database_url):
    from sampan.cli.main import main

    monkeypatch.setenv("SAMPAN_DATABASE_URL", database_url)
    main(["apps", "create", "line-3", "--description", "inspection"])
    main(["keys", "create", "--app", "line-3", "--scope", "predict:*", "--quota", "10/day"])
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("smp_")
    main(["keys", "list"])
    listed = capsys.readouterr().out
    assert key.split("_")[1] in listed and key.split("_")[2] not in listed and "10/day" in listed
    main(["keys", "revoke", key.split("_")[1]])
    main(["keys", "list", "--app", "line-3"])
    assert "revoked" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["keys", "create", "--app", "nope", "--scope", "predict:*"])
    assert stop.value.code == NotFoundError.exit_code
    assert "sampan apps create nope" in capsys.readouterr().err


def test_a_database_from_the_first_schema_is_migrated_in_place(database_url):
    """A platform database written by revision 0001 keeps its apps and keys when a newer
    sampan opens it (Alembic upgrades it to head)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, text

    from sampan.platform.db import MIGRATIONS, Database, normalise_url

    engine = create_engine(normalise_url(database_url))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text("INSERT INTO apps (name, description, created_at) VALUES ('old', '', :ts)"),
            {"ts": "2026-01-01T00:00:00+00:00"},
        )
    engine.dispose()
    with Database(database_url) as db:
        keys = Keys(db)
        assert [a["name"] for a in keys.list_apps()] == ["old"]
        key, record = keys.create_key("old", ["predict:*"], quotas=["1/day"], quota_units="units")
        assert keys.verify(key).quota_units == "units" and record["quota_model"] is None
        with db.engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0003"  # console_sessions too
