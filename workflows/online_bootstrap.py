"""Step `load_online`: fill an empty online table from the lake (the seed's "load online").

Only an empty table is loaded: once the ingest consumer writes to it, the online table is
already current and loading the lake again would duplicate every click. Runs after DEPLOY, so
the deployment's indexes exist before the rows arrive.
"""

from __future__ import annotations

from core.config import Settings
from core.lake import TopicLake
from features.connection import connect


def bootstrap_online(settings: Settings) -> str:
    lake = TopicLake(settings.lake_dir, settings.topic)
    files = lake.files()
    conn = connect(settings.store_url, settings.database)
    try:
        cursor = conn.cursor()
        cursor.execute("SET @@execute_mode='online'")
        cursor.execute(f"SELECT * FROM {settings.table} LIMIT 1")
        if cursor.fetchall():
            return f"online table {settings.table} already has rows: left as it is"
        if not files:
            return f"the lake {settings.lake_dir} has no files yet: nothing to load"
        rows = 0
        for file_format in sorted({f.file_format for f in files}):
            cursor.execute(f"LOAD DATA INFILE '{lake.home.absolute()}/date=*/hour=*/*."
                           f"{file_format}' INTO TABLE {settings.table} OPTIONS("
                           f"format='{file_format}', header=true, mode='append')")
            loaded = getattr(cursor, "rowcount", -1)
            rows = -1 if loaded < 0 or rows < 0 else rows + loaded
        conn.commit()
    finally:
        conn.close()
    loaded = f"{rows} rows" if rows >= 0 else "its rows"
    return f"loaded {loaded} of {len(files)} lake files into the empty online table"
