"""Where the engine's records go: kept in memory, or streamed to disk as the simulation runs.

The engine hands every finished hop record and end-to-end frame record to a sink
(``add_hops`` / ``add_frame``) and forgets it; queue lengths over time are built while the
simulation runs (``QueueLog``, the rows of netsim.results.queue_lengths) and go to the sink too
(``add_queues``). Two sinks:

* ``MemorySink`` keeps the rows (tests, ``run_scenario(write=False)``, small runs in a notebook);
* ``StreamingSink`` buffers at most ``flush_rows`` rows per table, then appends them as one parquet
  row group (and, optionally, to the CSV copy). Memory stays flat however many frames run.

Streamed tables (hops, frames, queues) are written to temporary files next to their final names
and renamed into place by ``close()``; ``abort()`` (or a crash) leaves earlier complete tables
untouched, as ``netsim.results.write_table`` does. Rows are in the order the records completed (the simulated
order of events; queues: by time); ``RunResult.hops`` sorts them by (flow, frame, hop) on load.

Every row must have exactly the schema's columns (a ValueError names the difference), so the
parquet, the CSV and the in-memory DataFrame always agree on columns and dtypes.
"""
from __future__ import annotations

import heapq
import itertools
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FLUSH_ROWS = 4096
PARQUET_COMPRESSION = "zstd"


def _check_rows(rows: list[dict], schema: pa.Schema, name: str) -> None:
    names = set(schema.names)
    for row in rows:
        if row.keys() != names:
            extra, missing = sorted(row.keys() - names), sorted(names - row.keys())
            raise ValueError(f"{name} record columns differ from the schema: extra {extra}, missing {missing} "
                             "(update the schema in netsim/sim/engine.py)")


def rows_to_table(rows: list[dict], schema: pa.Schema, name: str) -> pa.Table:
    _check_rows(rows, schema, name)
    return pa.Table.from_pylist(rows, schema=schema)


def to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


class TableStream:
    """One table appended in row groups to ``name.parquet`` (and ``name.csv``), renamed into place on close."""

    def __init__(self, directory: str | Path, name: str, schema: pa.Schema, csv: bool = True,
                 flush_rows: int = FLUSH_ROWS):
        self.directory, self.name, self.schema, self.flush_rows = Path(directory), name, schema, flush_rows
        self.csv = csv
        self.rows_written = 0
        self._buffer: list[dict] = []
        self._tmp: dict[str, Path] = {}
        self._parquet: pq.ParquetWriter | None = None  # opened on the first flush: nothing on disk before
        self._csv = None

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._parquet = pq.ParquetWriter(self._temp("parquet"), self.schema, compression=PARQUET_COMPRESSION)
        if self.csv:
            self._csv = open(self._temp("csv"), "w", newline="")  # noqa: SIM115 - closed in close() / abort()

    def _temp(self, ext: str) -> Path:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.name}.{ext}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        self._tmp[ext] = Path(tmp)
        return self._tmp[ext]

    @property
    def rows(self) -> int:
        """Rows written so far, buffered ones included."""
        return self.rows_written + len(self._buffer)

    def write(self, rows: list[dict]) -> None:
        self._buffer.extend(rows)
        if len(self._buffer) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        table = rows_to_table(self._buffer, self.schema, self.name)
        self._buffer = []
        if self._parquet is None:
            self._open()
        self._parquet.write_table(table)
        if self._csv is not None:
            to_frame(table).to_csv(self._csv, header=self.rows_written == 0, index=False)
        self.rows_written += table.num_rows

    def close(self) -> dict[str, Path]:
        """Flush, close and rename into place; returns the final paths by extension."""
        self.flush()
        if self._parquet is None:
            self._open()
        if self._csv is not None and self.rows_written == 0:  # an empty table still gets its header
            to_frame(self.schema.empty_table()).to_csv(self._csv, index=False)
        self._parquet.close()
        if self._csv is not None:
            self._csv.close()
        final = {}
        for ext, tmp in self._tmp.items():
            final[ext] = self.directory / f"{self.name}.{ext}"
            os.replace(tmp, final[ext])
        self._tmp = {}
        return final

    def abort(self) -> None:
        """Drop what was written; the files already in place (an earlier run's) stay as they were."""
        for closable in (self._parquet, self._csv):
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # noqa: BLE001 - best effort while failing anyway
                pass
        for tmp in self._tmp.values():
            tmp.unlink(missing_ok=True)
        self._tmp = {}


class MemorySink:
    """Keeps every record (lists of dicts) and gives them back as DataFrames with the schema's dtypes."""

    streaming = False

    def __init__(self, schemas: dict[str, pa.Schema]):
        """``schemas``: the schema of each table, hops, frames and queues (netsim.sim.engine.SCHEMAS)."""
        self.schemas = schemas
        self.rows: dict[str, list[dict]] = {name: [] for name in schemas}

    def add_hops(self, rows: list[dict]) -> None:
        self.rows["hops"].extend(rows)

    def add_frame(self, row: dict) -> None:
        self.rows["frames"].append(row)

    def add_queues(self, rows: list[dict]) -> None:
        self.rows["queues"].extend(rows)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def count(self, name: str) -> int:
        return len(self.rows[name])

    def table(self, name: str) -> pd.DataFrame:
        return to_frame(rows_to_table(self.rows[name], self.schemas[name], name))


class StreamingSink:
    """Streams hop records, frame records and queue lengths to the ``hops`` / ``frames`` /
    ``queues`` tables in ``directory``."""

    streaming = True

    def __init__(self, directory: str | Path, schemas: dict[str, pa.Schema], csv: bool = True,
                 flush_rows: int = FLUSH_ROWS):
        """``schemas``: the schema of each table, hops, frames and queues (netsim.sim.engine.SCHEMAS)."""
        self.directory = Path(directory)
        self.streams = {name: TableStream(directory, name, schema, csv, flush_rows) for name, schema in schemas.items()}
        self.paths: dict[str, dict[str, Path]] = {}

    def add_hops(self, rows: list[dict]) -> None:
        self.streams["hops"].write(rows)

    def add_frame(self, row: dict) -> None:
        self.streams["frames"].write([row])

    def add_queues(self, rows: list[dict]) -> None:
        self.streams["queues"].write(rows)

    def close(self) -> None:
        for name, stream in self.streams.items():
            self.paths[name] = stream.close()

    def count(self, name: str) -> int:
        return self.streams[name].rows

    def abort(self) -> None:
        for stream in self.streams.values():
            stream.abort()


class QueueLog:
    """Queue lengths over time, built as the simulation runs: one row (node, queue, time_s, length)
    per time at which a node's queue changes, the length after every change at that time; the same
    rows as ``netsim.results.queue_lengths`` computes from a whole hops table, emitted in time order.

    ``add(now, node, queue, time, delta)`` records a frame joining (+1) or leaving (-1) a queue at
    ``time >= now`` (a radio's departures are known when the frame is queued). As the simulation
    clock never goes back, every change before ``now`` is final and is emitted; what is held back is
    bounded by the frames in flight.
    """

    def __init__(self, emit: Callable[[list[dict]], None]):
        self.emit = emit
        self._pending: list[tuple[float, int, str, str, int]] = []  # heap of (time, seq, node, queue, delta)
        self._seq = itertools.count()
        self._length: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, now: float, node: str, queue: str, time: float, delta: int) -> None:
        if self._pending and self._pending[0][0] < now:
            self._flush(now)
        heapq.heappush(self._pending, (time, next(self._seq), node, queue, delta))

    def close(self) -> None:
        self._flush(math.inf)

    def _flush(self, before: float) -> None:
        pending, rows = self._pending, []
        while pending and pending[0][0] < before:
            t = pending[0][0]
            changed: dict[tuple[str, str], int] = {}
            while pending and pending[0][0] == t:
                _, _, node, queue, delta = heapq.heappop(pending)
                self._length[node, queue] += delta
                changed[node, queue] = self._length[node, queue]
            rows += [{"node": n, "queue": q, "time_s": t, "length": k} for (n, q), k in sorted(changed.items())]
        if rows:
            self.emit(rows)


def read_columns(path: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Only the named columns of a parquet table (all of them for None)."""
    return pq.read_table(path, columns=columns).to_pandas()
