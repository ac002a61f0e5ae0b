"""The viewer's query parameters: which episodes a page shows, how they are sorted, where a page starts.

Filters live in the URL (``/episodes?model=gpt&resolved=yes``) so that a view can be shared; this module
turns them into an ``EpisodeFilter`` and back into the query strings of the links a page offers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.errors import ForagerError
from storage import EpisodeFilter
from storage.viewer_queries import EPISODE_SORTS


class ViewerError(ForagerError):
    """A request the viewer cannot answer; ``status`` is the HTTP status it answers with."""

    status = 400


class NotFound(ViewerError):
    status = 404


#: Query parameter -> ``EpisodeFilter`` field, for the parameters that are plain strings.
TEXT_FILTERS = {
    "model": "model",
    "exit_reason": "exit_reason",
    "repository": "repository",
    "kind": "task_kind",
    "operator": "operator",
    "status": "status",
    "format": "action_format",
}
#: Every query parameter that filters episodes, in the order links write them.
FILTER_PARAMS = (*TEXT_FILTERS, "resolved", "task", "since", "until")


@dataclass(frozen=True)
class EpisodeQuery:
    """A parsed episode listing request: the filter, the search text, the order and the page start."""

    filter: EpisodeFilter
    given: dict[str, str] = field(default_factory=dict)
    """The filter parameters as given (non-empty ones), to write back into links."""
    search: str = ""
    sort: str = "created"
    descending: bool = True
    after: str | None = None
    before: str | None = None
    """Going back: the page that ends just before this episode (keyset, as ``after`` is forward)."""

    def params(self, **changes: Any) -> dict[str, str]:
        """This query's parameters with ``changes`` (a None value removes one), for a link."""
        params = dict(self.given)
        if self.search:
            params["q"] = self.search
        if (self.sort, self.descending) != ("created", True):
            params["sort"] = self.sort
            params["order"] = "desc" if self.descending else "asc"
        params.update({key: str(value) for key, value in changes.items() if value is not None})
        for key, value in changes.items():
            if value is None:
                params.pop(key, None)
        return params


def episode_query(query: Mapping[str, str]) -> EpisodeQuery:
    """Parse a request's query parameters; raises ``ViewerError`` saying which one is wrong and why."""
    given = {key: query[key].strip() for key in FILTER_PARAMS if query.get(key, "").strip()}
    fields: dict[str, Any] = {TEXT_FILTERS[key]: value for key, value in given.items() if key in TEXT_FILTERS}
    if "resolved" in given:
        fields["resolved"] = _yes_no(given["resolved"])
    if "task" in given:
        fields["task_id"] = _integer("task", given["task"])
    for name in ("since", "until"):
        if name in given:
            fields[name] = _moment(name, given[name])
    try:
        selection = EpisodeFilter(**fields)
    except ValueError as exc:
        raise ViewerError(f"bad filter: {exc}") from exc
    sort = query.get("sort", "created")
    if sort not in EPISODE_SORTS:
        raise ViewerError(f"unknown sort {sort!r}: use one of {', '.join(EPISODE_SORTS)}")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ViewerError(f"unknown order {order!r}: use asc or desc")
    return EpisodeQuery(
        selection,
        given,
        search=query.get("q", "").strip(),
        sort=sort,
        descending=order == "desc",
        after=query.get("after") or None,
        before=query.get("before") or None,
    )


def is_id(ref: str) -> bool:
    """Whether a URL's ``ref`` can be a stored row's id: ASCII digits within a 32-bit key (``²`` is a
    digit to ``str.isdigit``, and PostgreSQL refuses a larger integer for an integer column)."""
    return ref.isascii() and ref.isdigit() and int(ref) < 2**31


def optional_int(query: Mapping[str, str], name: str) -> int | None:
    """The integer parameter ``name``; None when absent or empty."""
    value = query.get(name, "").strip()
    return _integer(name, value) if value else None


def _integer(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ViewerError(f"{name}={value!r} is not a number") from None


def _yes_no(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "1"):
        return True
    if lowered in ("no", "false", "0"):
        return False
    raise ViewerError(f"resolved={value!r}: use yes or no")


def _moment(name: str, value: str) -> datetime:
    """A date (``2026-12-01``) or ISO 8601 time; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ViewerError(f"{name}={value!r} is not a date: use YYYY-MM-DD or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
