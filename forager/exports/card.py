"""The dataset card (``README.md``) written beside a parquet export: what is in it and how it was made."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from forager.exports.driver import ExportSummary, Tally

#: How many distinct generation configs the card lists before summarizing the rest.
_MAX_CONFIGS = 10


def dataset_card(summary: ExportSummary, schema: pa.Schema) -> str:
    """The card's Markdown, with the YAML header that tells Hugging Face ``datasets`` where the data is."""
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        "  data_files:",
        "  - split: train",
        "    path: data/train-*.parquet",
        "tags:",
        "- agent-trajectories",
        "- software-engineering",
        "- forager",
        "---",
        "",
        "# Forager agent trajectories",
        "",
        f"Exported by Forager on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {summary.written} episodes "
        f"({summary.resolved} resolved, {_rate(summary.resolved, summary.written)}) of "
        f"{len(summary.per_repository)} repositories, from {summary.read} episodes read.",
        "",
        _view(summary),
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_dataset("parquet", data_dir="PATH/TO/THIS/FOLDER", split="train")',
        "```",
        "",
        "## Selection",
        "",
        f"- skipped as unresolved (`--resolved-only`): {summary.skipped_unresolved}",
        f"- skipped beyond `--max-per-task`: {summary.skipped_max_per_task}",
        f"- dropped as near-duplicates (`--dedup`): {summary.dropped_duplicates}",
        "",
    ]
    lines += _tally_table("Resolve rate per repository", "repository", summary.per_repository)
    lines += _tally_table(
        "Resolve rate per operator (mutate-fix) or task kind", "operator", summary.per_operator
    )
    lines += ["## Models", "", "| model | episodes |", "|---|---:|"]
    lines += [f"| {_cell(model)} | {count} |" for model, count in summary.models.most_common()]
    lines += ["", "## Generation configs", ""]
    for config, count in summary.configs.most_common(_MAX_CONFIGS):
        lines += [f"{count} episode(s):", "", "```json", json.dumps(json.loads(config), indent=2), "```", ""]
    if len(summary.configs) > _MAX_CONFIGS:
        lines += [f"... and {len(summary.configs) - _MAX_CONFIGS} other configs.", ""]
    lines += _dedup(summary)
    lines += ["## Columns", "", "| column | type |", "|---|---|"]
    lines += [f"| `{field.name}` | `{field.type}` |" for field in schema]
    lines += [
        "",
        "`trajectory` is the conversation the model saw (system prompt, task prompt, assistant turns with "
        "their tool calls, observations); tool-call `arguments`, `tools` (the OpenAI tool schemas), `grade` "
        "(per-test outcomes) and `generation_config` are JSON strings.",
        "",
    ]
    return "\n".join(lines)


def _view(summary: ExportSummary) -> str:
    if summary.per_request:
        return (
            f"{summary.rows} rows: an episode whose context was shortened to fit the model's window is cut "
            "where it was shortened, so that in every row each assistant turn follows exactly the messages "
            "its request sent (`first_request`..`last_request`); any other episode is one row."
        )
    return (
        "One row per episode: its conversation at the end. Where `context_shortened` is true, texts were "
        "shortened to fit the model's window and the earlier turns had seen them whole; export with "
        "`--per-request` for rows that are exactly what each request sent."
    )


def _tally_table(title: str, what: str, table: dict[str, Tally]) -> list[str]:
    lines = [f"## {title}", "", f"| {what} | episodes | resolved | rate |", "|---|---:|---:|---:|"]
    for name, tally in sorted(table.items(), key=lambda item: (-item[1].episodes, item[0])):
        rate = _rate(tally.resolved, tally.episodes)
        lines.append(f"| {_cell(name)} | {tally.episodes} | {tally.resolved} | {rate} |")
    return [*lines, ""]


def _dedup(summary: ExportSummary) -> list[str]:
    if summary.dedup is None:
        return ["## Near-duplicates", "", "Not filtered (export without `--dedup`).", ""]
    report = summary.dedup
    lines = [
        "## Near-duplicates",
        "",
        f"MinHash over shingles of each trajectory's normalized actions; a trajectory whose estimated "
        f"Jaccard similarity to a kept one of the same task is at least {report.threshold} was dropped: "
        f"{report.kept} kept, {report.dropped} dropped.",
        "",
        "| repository | kept | dropped |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {_cell(name)} | {c.kept} | {c.dropped} |" for name, c in sorted(report.per_repository.items())
    ]
    return [*lines, ""]


def _rate(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
