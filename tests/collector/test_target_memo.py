"""The child's server-list read reuses the target of an unchanged row (no re-check, no decrypt) and checks a
changed, new or invalid row afresh: the web app's edit of one row is seen at the next read, as before."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from supervisor.children.targets import TargetMemo, read_servers
from supervisor.config import Settings
from supervisor.secret_box import SecretBox
from supervisor.servers import ServerSpec, add_server
from supervisor.storage.engine import make_engine
from supervisor.storage.migrations import upgrade_tenant

PASSWORD = "Memo-pw-1"


class CountingBox:
    def __init__(self, box: SecretBox) -> None:
        self.box = box
        self.decrypted = 0

    def decrypt(self, token: str) -> str:
        self.decrypted += 1
        return self.box.decrypt(token)


def tenant_db(tmp_path: Path) -> tuple[Engine, SecretBox, Settings]:
    engine = make_engine(f"sqlite:///{tmp_path / 'tenant.db'}", pooled=False)
    upgrade_tenant(engine)
    key_file = tmp_path / "secret.key"
    box = SecretBox.load(str(key_file))
    for index in range(3):
        spec = ServerSpec(name=f"sql-{index}", host="127.0.0.1", port=1433 + index, username="mon")
        add_server(engine, spec, box.encrypt(PASSWORD))
    return engine, box, Settings(secret_key_file=str(key_file))


def read(engine: Engine, settings: Settings, box: CountingBox, memo: TargetMemo) -> dict[str, object]:
    with engine.connect() as conn:
        rows = read_servers(conn, settings, box, memo=memo)
    return {t.name: t for t in rows.targets} | {s.name: s.error for s in rows.invalid}


def test_unchanged_rows_are_reused_and_an_edited_row_is_read_afresh(tmp_path: Path) -> None:
    engine, secret_box, settings = tenant_db(tmp_path)
    box, memo = CountingBox(secret_box), TargetMemo()
    first = read(engine, settings, box, memo)
    assert box.decrypted == 3
    again = read(engine, settings, box, memo)
    assert box.decrypted == 3 and all(again[name] is first[name] for name in first)

    with engine.begin() as conn:  # the web app moves one server
        conn.execute(text("UPDATE servers SET port = 2000 WHERE name = 'sql-1'"))
    moved = read(engine, settings, box, memo)
    assert box.decrypted == 4
    assert moved["sql-1"].endpoint.port == 2000  # type: ignore[attr-defined]
    assert moved["sql-0"] is first["sql-0"] and moved["sql-2"] is first["sql-2"]


def test_a_row_made_invalid_is_reported_and_checked_again_on_every_read(tmp_path: Path) -> None:
    engine, secret_box, settings = tenant_db(tmp_path)
    box, memo = CountingBox(secret_box), TargetMemo()
    read(engine, settings, box, memo)
    with engine.begin() as conn:
        conn.execute(text("UPDATE servers SET port = -1 WHERE name = 'sql-2'"))
    for _ in range(2):
        rows = read(engine, settings, box, memo)
        assert "invalid servers.port = -1" in str(rows["sql-2"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE servers SET port = 1435 WHERE name = 'sql-2'"))
    assert read(engine, settings, box, memo)["sql-2"].endpoint.port == 1435  # type: ignore[attr-defined]


def test_a_removed_server_leaves_the_memo(tmp_path: Path) -> None:
    engine, secret_box, settings = tenant_db(tmp_path)
    box, memo = CountingBox(secret_box), TargetMemo()
    first = read(engine, settings, box, memo)
    with engine.begin() as conn:
        conn.execute(text("UPDATE servers SET removed_at = CURRENT_TIMESTAMP WHERE name = 'sql-0'"))
    assert set(read(engine, settings, box, memo)) == {"sql-1", "sql-2"}
    with engine.begin() as conn:  # back, unchanged: checked again, not served from a stale memo entry
        conn.execute(text("UPDATE servers SET removed_at = NULL WHERE name = 'sql-0'"))
    decrypted = box.decrypted
    back = read(engine, settings, box, memo)
    assert box.decrypted == decrypted + 1 and back["sql-0"] == first["sql-0"]
