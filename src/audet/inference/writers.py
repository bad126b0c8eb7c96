"""Per-input result tables: rows appended as produced, resumable after a kill, finished atomically.

While an input is processed its rows go to ``OUT/<name>.csv.part`` (appended, flushed and fsynced
batch by batch) and, after each append, ``OUT/<name>.csv.progress.json`` is replaced atomically
with the byte length of the part file and the position to resume from. After a kill, the next run
with the same input and checkpoint truncates the part file to the recorded length (dropping any
rows written after the last progress record, so none is duplicated) and continues from the
recorded position (so none is lost). When the input is done the part file is renamed to
``OUT/<name>.csv`` (or converted to ``OUT/<name>.parquet``) and the progress file removed: a
finished table never exists half-written.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from audet.utils.io import write_json_atomic

__all__ = ["TableWriter", "parquet_available", "result_columns", "round_for_output", "POSE_COLUMNS"]

#: head pose in degrees (:mod:`audet.inference.headpose`)
POSE_COLUMNS = ("yaw", "pitch", "roll")

log = logging.getLogger(__name__)


def parquet_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyarrow") is not None


def result_columns(aus) -> list[str]:
    """Column order of a result table (see ``docs/inference.md``)."""
    cols = ["file", "frame", "timestamp", "face_id", "confidence", "success", "box_x1", "box_y1", "box_x2", "box_y2"]
    cols += [f"x_{i}" for i in range(68)] + [f"y_{i}" for i in range(68)]
    cols += list(POSE_COLUMNS)
    cols += [f"AU{int(a):02d}_p" for a in aus] + [f"AU{int(a):02d}_c" for a in aus]
    return cols


def round_for_output(df: pd.DataFrame) -> pd.DataFrame:
    """Round to what the numbers mean (pixels and degrees to 0.01, probabilities to 1e-5, times to 0.1 ms)."""
    out = df.copy()
    px = [c for c in out.columns if c.startswith(("x_", "y_", "box_")) or c in POSE_COLUMNS]
    pr = [c for c in out.columns if c.endswith("_p") or c == "confidence"]
    if px:
        out[px] = out[px].round(2)
    if pr:
        out[pr] = out[pr].round(5)
    if "timestamp" in out:
        out["timestamp"] = out["timestamp"].round(4)
    return out


class TableWriter:
    """One input's table. ``begin()`` -> the saved progress dict (resume) or ``None`` (fresh start);
    ``append(rows, progress)``; ``finish()`` -> the final path. Not finishing leaves the part and
    progress files for the next run.

    Args:
        out_dir: output folder.
        name: file stem for this input.
        signature: what must match for a resume (input path/size/mtime, checkpoint, options); a
            mismatch starts the input afresh.
        fmt: ``"csv"`` or ``"parquet"`` (needs pyarrow; the part file is CSV either way).
    """

    def __init__(self, out_dir, name: str, signature: dict, fmt: str = "csv"):
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown table format {fmt!r}: csv or parquet")
        if fmt == "parquet" and not parquet_available():
            raise ValueError("Parquet output needs pyarrow: pip install pyarrow (or use --format csv)")
        self.out_dir = Path(out_dir)
        self.fmt = fmt
        self.final = self.out_dir / f"{name}.{fmt}"
        self.part = self.out_dir / f"{name}.csv.part"
        self.progress_path = self.out_dir / f"{name}.csv.progress.json"
        self.signature = json.loads(json.dumps(signature, default=str))
        self.rows_written = 0
        self._bytes = 0
        self._header = True
        self._columns: list[str] | None = None

    @property
    def done(self) -> bool:
        """True when the final table exists and no run of it is pending."""
        return self.final.is_file() and not self.progress_path.is_file()

    def begin(self) -> dict | None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prog = None
        if self.progress_path.is_file() and self.part.is_file():
            try:
                prog = json.loads(self.progress_path.read_text())
            except (json.JSONDecodeError, OSError):
                prog = None
            if prog is not None and prog.get("signature") != self.signature:
                log.warning("%s: input or options changed since the interrupted run; starting it again", self.final.name)
                prog = None
            if prog is not None and self.part.stat().st_size < int(prog["bytes"]):
                log.warning("%s: part file shorter than recorded; starting it again", self.part.name)
                prog = None
        if prog is None:
            self.part.write_bytes(b"")
            self._bytes, self.rows_written, self._header = 0, 0, True
            if self.progress_path.exists():
                self.progress_path.unlink()
            return None
        with open(self.part, "r+b") as f:  # drop rows written after the last progress record
            f.truncate(int(prog["bytes"]))
        self._bytes = int(prog["bytes"])
        self.rows_written = int(prog.get("rows", 0))
        self._header = self._bytes == 0
        self._columns = prog.get("columns")
        return dict(prog.get("state") or {})

    def append(self, rows: pd.DataFrame, state: dict) -> None:
        """Append ``rows`` (may be empty), then record ``state`` (where a resumed run continues)."""
        if len(rows) or self._header:
            if self._columns is not None and list(rows.columns) != self._columns:
                rows = rows.reindex(columns=self._columns)
            text = round_for_output(rows).to_csv(index=False, header=self._header, lineterminator="\n")
            data = text.encode()
            with open(self.part, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self._bytes += len(data)
            self._header = False
            self._columns = list(rows.columns)
            self.rows_written += len(rows)
        write_json_atomic(self.progress_path, {"signature": self.signature, "bytes": self._bytes,
                                               "rows": self.rows_written, "columns": self._columns,
                                               "state": state})

    def finish(self) -> Path:
        if self.fmt == "csv":
            os.replace(self.part, self.final)
        else:
            self._to_parquet()
            self.part.unlink()
        if self.progress_path.exists():
            self.progress_path.unlink()
        return self.final

    def _to_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from audet.utils.io import atomic_path

        cols = pd.read_csv(self.part, nrows=0).columns
        dtypes = {c: ("string" if c == "file" else "Int64" if c in ("frame", "face_id", "success")
                      else "Int8" if c.endswith("_c") else "float64") for c in cols}  # same schema in every chunk
        with atomic_path(self.final) as tmp:
            writer = None
            for chunk in pd.read_csv(self.part, chunksize=50_000, dtype=dtypes):
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(str(tmp), table.schema)
                writer.write_table(table)
            if writer is None:  # a header-only table
                pq.write_table(pa.Table.from_pandas(pd.read_csv(self.part, dtype=dtypes), preserve_index=False), str(tmp))
            else:
                writer.close()

