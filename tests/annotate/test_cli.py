"""`covidscan annotate` on the command line: accounts, export, and one-line errors; the store's
Alembic migration."""

from __future__ import annotations

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
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0001"
