"""The trace half of the store on SQLite and PostgreSQL: add, resume keys, filters, streaming, counts."""

from __future__ import annotations

import pytest

from storage import Image, ImageStatus, Store, StoreError
from storage.models import Trace, TraceKind, TraceStatus
from storage.traces import TraceFilter
from tests.test_storage import db_url  # noqa: F401 - the fixture: a fresh SQLite or PostgreSQL database

DATA = {
    "files": ["src/m.py"],
    "blocks": [["src/m.py", 1, 2]],
    "source": {"src/m.py": {"1": "def f(x):", "2": "    return x  # ünïcödé"}},
    "frames": [["call", 0, 1, {"x": "'\\udcff'"}, None], ["return", 0, 2, None, "1"]],
}


def _image(store: Store, name: str) -> Image:
    repository = store.get_or_create_repository(f"/src/{name}", name)
    return store.save_image(
        Image(repository_id=repository.id, tag=f"forager/{name}:1", status=ImageStatus.READY,
              base_image="b", recipe={}, recipe_hash="h")
    )  # fmt: skip


def _trace(
    image: Image, n: int, *, kept: bool = True, frames: int = 2, kind: str = TraceKind.FUNCTION
) -> Trace:
    return Trace(
        image_id=image.id, key=f"{image.id}|{n}", kind=kind, test=f"tests/t.py::test_{n}", path="src/m.py",
        qualname="f", line=1, status=TraceStatus.OK if kept else TraceStatus.DROPPED,
        drop_reason="" if kept else "nondeterministic", deterministic=kept, n_frames=frames,
        context="# src/m.py\ndef f(x):  # << START_OF_TRACE\n" if kept else "", data=DATA if kept else None,
    )  # fmt: skip


def test_traces_are_stored_resumed_filtered_and_streamed(db_url: str) -> None:  # noqa: F811
    with Store(db_url) as store:
        one, two = _image(store, "one"), _image(store, "two")
        store.add_traces([_trace(one, n, frames=n) for n in range(1, 451)])
        store.add_traces([_trace(one, 1000, kept=False), _trace(two, 1, kind=TraceKind.TEST)])
        with pytest.raises(StoreError, match="already stored"):
            store.add_traces([_trace(two, 2), _trace(one, 3)])
        assert len(store.trace_keys(one.id)) == 451 and store.trace_keys(two.id) == {f"{two.id}|1"}

        assert store.trace_counts() == {"ok": 451, "dropped": {"nondeterministic": 1}}
        assert store.trace_counts(two.id) == {"ok": 1, "dropped": {}}
        streamed = list(store.iter_traces(TraceFilter(image_id=one.id, min_frames=10, max_frames=400)))
        assert [t.n_frames for t in streamed] == list(range(10, 401))
        assert streamed[0].data == DATA and streamed[0].image.repository.name == "one"
        assert [t.key for t in store.list_traces(TraceFilter(repository="two"))] == [f"{two.id}|1"]
        assert len(store.list_traces(TraceFilter(kind=TraceKind.TEST, status=None))) == 1
        dropped = store.list_traces(TraceFilter(status=TraceStatus.DROPPED))
        assert [t.drop_reason for t in dropped] == ["nondeterministic"]
        trace = store.get_trace(dropped[0].id)
        assert trace is not None and trace.data is None and trace.image.tag == "forager/one:1"

        # The viewer's pages: newest first, after a trace or (going back) before one; entry text and
        # determinism filters, with LIKE's wildcards taken literally.
        everything = [t.id for t in store.trace_page(TraceFilter(status=None), limit=1000)]
        assert everything == sorted(everything, reverse=True) and len(everything) == 452
        page = store.trace_page(TraceFilter(status=None), after=everything[99], limit=100)
        assert [t.id for t in page] == everything[100:200] and page[0].image.repository.name == "one"
        back = store.trace_page(TraceFilter(status=None), before=everything[100], limit=100)
        assert [t.id for t in back] == everything[:100]
        named = store.trace_page(TraceFilter(entry="test_44", status=None), limit=100)
        assert sorted(t.test for t in named) == [f"tests/t.py::test_{n}" for n in (44, *range(440, 450))]
        assert store.trace_page(TraceFilter(entry="test%4", status=None)) == []
        assert [t.key for t in store.trace_page(TraceFilter(deterministic=False, status=None))] == [
            f"{one.id}|1000"
        ]
