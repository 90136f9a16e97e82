"""PostgreSQL launcher: a real server, run unprivileged, private, secret-free argv, removed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest
import trio

from agentkeys.devstack import DevstackError, Postgres, start_postgres


def _query(dsn: str, password: str, statement: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, password=password, connect_timeout=5) as conn:
        return conn.execute(statement).fetchall()


def _cmdlines(session: int) -> list[str]:
    lines = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_text = Path(f"/proc/{entry}/stat").read_text(errors="replace")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat_text[stat_text.rindex(")") + 2 :].split()[3]) == session:
            lines.append(cmdline.replace(b"\0", b" ").decode())
    return lines


async def test_a_fresh_server_answers_over_socket_and_tcp(tmp_path: Path) -> None:
    async with start_postgres(run_dir=tmp_path) as pg:
        for tcp in (False, True):
            rows = await trio.to_thread.run_sync(_query, pg.dsn(tcp=tcp), pg.password, "SELECT 1")
            assert rows == [(1,)]
        # never as root; the socket directory is private to the server's owner
        owner = pg.socket_dir.stat()
        assert owner.st_uid != 0 or os.geteuid() != 0
        assert stat.S_IMODE(owner.st_mode) == 0o700
        assert os.stat(f"/proc/{pg.pid}").st_uid == owner.st_uid
        # the password is in a 0600 file and on no command line
        assert pg.password_file.read_text() == pg.password
        assert stat.S_IMODE(pg.password_file.stat().st_mode) == 0o600
        cmdlines = _cmdlines(pg.pid)
        assert cmdlines
        assert all(pg.password not in line for line in cmdlines)
        assert pg.password not in repr(pg)
        home = pg.socket_dir.parent
    assert not home.exists()  # data directory and socket removed


async def test_password_is_required(postgres: Postgres) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await trio.to_thread.run_sync(_query, postgres.dsn(tcp=True), "wrong", "SELECT 1")


async def test_databases_come_and_go(postgres: Postgres) -> None:
    dsn = await postgres.create_database("devstack_probe")
    try:
        rows = await trio.to_thread.run_sync(
            _query, dsn, postgres.password, "SELECT current_database()"
        )
        assert rows == [("devstack_probe",)]
        with pytest.raises(DevstackError, match="refused"):
            await postgres.create_database("devstack_probe")
    finally:
        await postgres.drop_database("devstack_probe")
    with pytest.raises(DevstackError, match="not a database name"):
        await postgres.create_database("Robert'); DROP TABLE x;--")
