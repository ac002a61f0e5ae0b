"""``parquet``: the SFT rows under the column names of published SWE trajectory sets, with a dataset card.

The folder holds ``data/train-NNNNN-of-MMMMM.parquet`` shards (a new shard once one passes
``shard_bytes``) and ``README.md``, a Hugging Face dataset card: how many episodes, resolve rates per
repository and operator, the generation configs, the dedup figures, and the columns. It loads with
``datasets.load_dataset("parquet", data_dir=FOLDER)`` (or ``load_dataset(FOLDER)``, which reads the
card's ``configs``).

The schema is fixed (:data:`SCHEMA`), so every shard and every row has the same types: ``trajectory``
holds the chat messages (tool-call ``arguments`` as JSON strings), ``tools`` the OpenAI tool schemas as
a JSON string, and ``grade`` and ``generation_config`` JSON strings, as in the ``sft`` format.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from forager.exports.card import dataset_card
from forager.exports.driver import ExportSummary
from forager.exports.output import json_bytes
from forager.exports.records import EpisodeRecord, RequestRow
from forager.exports.sft import sft_row

_CALL = pa.struct(
    [
        ("id", pa.string()),
        ("type", pa.string()),
        ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
    ]
)
_MESSAGE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(_CALL)),
        ("tool_call_id", pa.string()),
    ]
)
#: The columns, in order. Names follow published SWE trajectory sets (SWE-rebench, SWE-Gym, SWE-smith).
SCHEMA = pa.schema(
    [
        ("trajectory_id", pa.string()),
        ("instance_id", pa.string()),
        ("repo", pa.string()),
        ("task_kind", pa.string()),
        ("operator", pa.string()),
        ("model", pa.string()),
        ("policy", pa.string()),
        ("action_format", pa.string()),
        ("trajectory", pa.list_(_MESSAGE)),
        ("tools", pa.string()),
        ("model_patch", pa.string()),
        ("exit_status", pa.string()),
        ("status", pa.string()),
        ("graded", pa.bool_()),
        ("resolved", pa.bool_()),
        ("reward", pa.float64()),
        ("n_steps", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("created_at", pa.string()),
        ("grade", pa.string()),
        ("generation_config", pa.string()),
        ("context_shortened", pa.bool_()),
        ("first_request", pa.int32()),
        ("last_request", pa.int32()),
    ]
)
#: The columns of few distinct values, dictionary-encoded; a dictionary of the long texts (messages,
#: patches) would cost memory for nothing.
_DICTIONARY_COLUMNS = [
    "repo",
    "task_kind",
    "operator",
    "model",
    "policy",
    "action_format",
    "exit_status",
    "status",
]
#: Rows converted to Arrow at a time, at most: fewer when their JSON passes :data:`_BATCH_BYTES`.
_ROWS_PER_BATCH = 64
_BATCH_BYTES = 4 << 20
#: SFT field -> parquet column, where the names differ.
_RENAMED = {"messages": "trajectory", "repository": "repo", "exit_reason": "exit_status"}


def parquet_row(rec: EpisodeRecord, row: RequestRow) -> dict[str, Any]:
    return {_RENAMED.get(name, name): value for name, value in sft_row(rec, row).items()}


class ParquetWriter:
    directory: ClassVar[bool] = True
    per_request: ClassVar[bool] = True

    def __init__(self, path: Path, *, shard_bytes: int = 256 << 20, row_group_bytes: int = 4 << 20) -> None:
        """``shard_bytes``: a shard is closed once it is that large. ``row_group_bytes``: rows are kept as
        Arrow data up to that size, then written as one row group (what bounds the memory)."""
        self._root = path
        self._data = path / "data"
        self._data.mkdir()
        self._shard_bytes = shard_bytes
        self._row_group_bytes = row_group_bytes
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        # Rows wait as JSON lines and become Arrow data through pyarrow's JSON reader, a batch at a time.
        # Not through pa.RecordBatch.from_pylist: converting Python objects imports pandas (pyarrow 26
        # checks every value for pandas types), which alone costs 55 MiB of resident memory.
        self._lines = io.BytesIO()
        self._pending = 0
        self.rows = 0
        self._batches: list[pa.RecordBatch] = []
        self._batched_bytes = 0
        # The C library's allocator, which hands freed memory back: pyarrow's default (mimalloc) keeps
        # about 25 MiB more resident (measured over 3,000 episodes of bench/export.py's store).
        self._pool = pa.system_memory_pool()

    def write(self, rec: EpisodeRecord) -> bool:
        for row in rec.rows():
            self._lines.write(json_bytes(parquet_row(rec, row)) + b"\n")
            self._pending += 1
            self.rows += 1
            if self._pending >= _ROWS_PER_BATCH or self._lines.tell() >= _BATCH_BYTES:
                self._convert()
            if self._batched_bytes >= self._row_group_bytes:
                self._flush()
        return True

    def _convert(self) -> None:
        if not self._pending:
            return
        data = self._lines.getvalue()
        table = pa_json.read_json(
            io.BytesIO(data),
            # One block for the whole batch (a row must not straddle two), parsed on this thread.
            read_options=pa_json.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=pa_json.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="error"),
            memory_pool=self._pool,
        )
        self._batches += table.to_batches()
        self._batched_bytes += table.nbytes
        self._lines, self._pending = io.BytesIO(), 0

    def _flush(self) -> None:
        self._convert()
        if not self._batches:
            return
        if self._writer is None:
            self._shards.append(self._data / f"shard-{len(self._shards):05d}.parquet")
            self._writer = pq.ParquetWriter(
                self._shards[-1],
                SCHEMA,
                compression="zstd",
                use_dictionary=_DICTIONARY_COLUMNS,
                memory_pool=self._pool,
            )
        self._writer.write_table(pa.Table.from_batches(self._batches, schema=SCHEMA))
        self._batches, self._batched_bytes = [], 0
        if self._shards[-1].stat().st_size >= self._shard_bytes:
            self._writer.close()
            self._writer = None

    def close(self, summary: ExportSummary) -> None:
        summary.rows = self.rows
        self._flush()
        if self._writer is not None:
            self._writer.close()
        total = len(self._shards)
        for index, shard in enumerate(self._shards):
            shard.rename(self._data / f"train-{index:05d}-of-{total:05d}.parquet")
        (self._root / "README.md").write_text(dataset_card(summary, SCHEMA), encoding="utf-8")
