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

from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from forager.exports.card import dataset_card
from forager.exports.driver import ExportSummary
from forager.exports.records import EpisodeRecord
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
#: Rows converted to Arrow at a time.
_ROWS_PER_BATCH = 64
#: SFT field -> parquet column, where the names differ.
_RENAMED = {"messages": "trajectory", "repository": "repo", "exit_reason": "exit_status"}


def parquet_row(rec: EpisodeRecord) -> dict[str, Any]:
    return {_RENAMED.get(name, name): value for name, value in sft_row(rec).items()}


class ParquetWriter:
    directory: ClassVar[bool] = True

    def __init__(self, path: Path, *, shard_bytes: int = 256 << 20, row_group_bytes: int = 8 << 20) -> None:
        """``shard_bytes``: a shard is closed once it is that large. ``row_group_bytes``: rows are kept as
        Arrow data up to that size, then written as one row group (what bounds the memory)."""
        self._root = path
        self._data = path / "data"
        self._data.mkdir()
        self._shard_bytes = shard_bytes
        self._row_group_bytes = row_group_bytes
        self._shards: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        # Rows as Python objects cost several times their text: they become Arrow data a few at a time.
        self._rows: list[dict[str, Any]] = []
        self._batches: list[pa.RecordBatch] = []
        self._batched_bytes = 0

    def write(self, rec: EpisodeRecord) -> bool:
        self._rows.append(parquet_row(rec))
        if len(self._rows) >= _ROWS_PER_BATCH:
            self._convert()
        if self._batched_bytes >= self._row_group_bytes:
            self._flush()
        return True

    def _convert(self) -> None:
        if self._rows:
            batch = pa.RecordBatch.from_pylist(self._rows, schema=SCHEMA)
            self._batches.append(batch)
            self._batched_bytes += batch.nbytes
            self._rows = []

    def _flush(self) -> None:
        self._convert()
        if not self._batches:
            return
        if self._writer is None:
            self._shards.append(self._data / f"shard-{len(self._shards):05d}.parquet")
            self._writer = pq.ParquetWriter(
                self._shards[-1], SCHEMA, compression="zstd", use_dictionary=_DICTIONARY_COLUMNS
            )
        self._writer.write_table(pa.Table.from_batches(self._batches, schema=SCHEMA))
        self._batches, self._batched_bytes = [], 0
        if self._shards[-1].stat().st_size >= self._shard_bytes:
            self._writer.close()
            self._writer = None

    def close(self, summary: ExportSummary) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        total = len(self._shards)
        for index, shard in enumerate(self._shards):
            shard.rename(self._data / f"train-{index:05d}-of-{total:05d}.parquet")
        (self._root / "README.md").write_text(dataset_card(summary, SCHEMA), encoding="utf-8")
