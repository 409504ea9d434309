"""`covidscan annotate` on the command line: accounts, export, and one-line errors; the store's
Alembic migration."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher
from sqlalchemy import create_engine, inspect, text
from typer.testing import CliRunner

from covidscan.annotate.store import default_url, open_store
from covidscan.cli import app

runner = CliRunner()


def test_add_user_then_export_an_empty_store(tmp_path, monkeypatch):
    db = tmp_path / "a.db"
    monkeypatch.setenv("COVIDSCAN_ANNOTATE_PASSWORD", "a long enough password")
    r = runner.invoke(app, ["annotate", "add-user", "alice", "--role", "reader", "--slot", "reader1", "--reads-as", "Rad-5th", "--db", str(db)])
    assert r.exit_code == 0, r.output
    again = runner.invoke(app, ["annotate", "add-user", "alice", "--role", "reader", "--slot", "reader1", "--db", str(db)])
    assert again.exit_code == 2 and "already exists" in again.output
    no_slot = runner.invoke(app, ["annotate", "add-user", "bob", "--role", "reader", "--db", str(db)])
    assert no_slot.exit_code == 2 and "--slot" in no_slot.output
    r = runner.invoke(app, ["annotate", "export", "--db", str(db), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "annotations.csv").read_text().startswith("record_id,reader,slice_index,x0,y0,x1,y1")
    assert "0 cases" in r.output


def test_serve_without_an_ingest_folder_is_one_clear_line(tmp_path):
    r = runner.invoke(app, ["annotate", "serve", "--ingest", str(tmp_path / "none"), "--db", str(tmp_path / "a.db"),
                            "--params", str(tmp_path / "no-params.yaml")])
    assert r.exit_code == 2 and "manifest.parquet" in r.output and "Traceback" not in r.output


def test_alembic_creates_the_schema_at_head_and_is_idempotent(tmp_path):
    url = default_url(tmp_path / "s.db")
    open_store(url)
    open_store(url)  # a second start migrates nothing
    engine = create_engine(url)
    assert {"users", "boxes", "reads", "submissions", "adjudications", "audit"} <= set(inspect(engine).get_table_names())
    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0002"


def test_a_database_of_revision_0001_is_migrated_at_start_keeping_its_accounts(tmp_path):
    from alembic import command
    from alembic.config import Config

    from covidscan.annotate import store
    from covidscan.annotate.auth import authenticate

    url = default_url(tmp_path / "old.db")
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0001")  # what the first release created
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("insert into users (username, password_hash, role, failed_logins, created_at) values "
                       "('old', :h, 'senior', 0, '2026-01-01')"), {"h": PasswordHasher().hash("an old password")})
    assert "session_epoch" not in {col["name"] for col in inspect(engine).get_columns("users")}
    with open_store(url)() as db:  # the app's start: upgrade head
        assert authenticate(db, "old", "an old password").session_epoch == 0
