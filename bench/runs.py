"""What the benches that measure a child process per run share: a fresh database, peak RSS, spreads."""

from __future__ import annotations

import os
import resource
import statistics
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text


def peak_rss_mb(usage: resource.struct_rusage | None = None) -> float:
    """Peak RSS in MB: of a child waited for (its ``os.wait4`` usage), else of this process.

    ``ru_maxrss`` is in KiB on Linux, and it is the peak, so each child's figure stands alone.
    """
    usage = usage or resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float:
    """CPU seconds the whole machine has been busy so far (every core; idle and I/O wait left out)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(engine) -> float:
    """CPU seconds the whole PostgreSQL server has used so far: the postmaster, every live child,
    and the children it has reaped (a work horse's backend ends with its job, taking its own
    counter with it; the postmaster's cutime keeps it). Background processes count too."""
    with engine.connect() as conn:
        data = Path(conn.scalar(text("SHOW data_directory")))
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    used = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = _stat(int(entry.name))
            except OSError:
                continue
            if int(child[1]) == postmaster:  # ppid
                used += int(child[11]) + int(child[12])
    return used / os.sysconf("SC_CLK_TCK")


def database_backends(engine) -> list[int]:
    """PostgreSQL's backends of ``engine``'s database, other than the one asking."""
    with engine.connect() as conn:
        return list(
            conn.scalars(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
            )
        )


def spread(values: list[float], fmt: str) -> str:
    """``min/median/max`` of the runs, each formatted with ``fmt``."""
    values = sorted(values)
    return "/".join(format(v, fmt) for v in (values[0], statistics.median(values), values[-1]))


def fresh_database(
    kind: str, workdir: Path, pg_url: str, migrate: Callable[[str], None]
) -> tuple[str, Callable[[], None]]:
    """A migrated empty database (a SQLite file in ``workdir``, or a PostgreSQL schema) and its drop."""
    if kind == "sqlite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex}.sqlite3'}"
        migrate(url)
        return url, lambda: None
    schema = f"nl_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    migrate(url)

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return url, drop
