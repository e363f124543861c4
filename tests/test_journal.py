"""The one journal (data/journal.py) that sweeps and live runs append to: records of named kinds come
back in order after a restart, a torn last line is dropped, another fingerprint starts afresh, and a file
that is not a journal is never overwritten."""
from __future__ import annotations

import json
import math

import pytest

from moe2sim.data.journal import Journal, read
from moe2sim.errors import InputError


def test_records_of_named_kinds_come_back_in_order_after_a_restart(tmp_path):
    path = tmp_path / "run.partial.jsonl"
    with Journal(path, "moe2sim test", "f1", durable=True) as journal:
        journal.append("send", [{"query_id": 0}])
        journal.append("query", [{"query_id": 0, "latency_s": math.nan}])  # strict JSON: NaN as null
        journal.append("send", [{"query_id": 1}])
        # flushed as written: a reader sees every record while the journal is still open
        assert [k for k, _ in read(path)[1]] == ["send", "query", "send"]
    assert json.loads(path.read_text().splitlines()[0]) == {"journal": "moe2sim test", "fingerprint": "f1"}
    with Journal(path, "moe2sim test", "f1") as again:
        assert again.records("send") == [{"query_id": 0}, {"query_id": 1}]
        assert again.records("query") == [{"query_id": 0, "latency_s": None}]
        again.append("query", [{"query_id": 1, "latency_s": 2.5}])
    assert [r["query_id"] for k, r in read(path)[1] if k == "query"] == [0, 1]


def test_a_torn_last_line_is_dropped_and_the_rest_kept(tmp_path):
    path = tmp_path / "sweep.partial.jsonl"
    with Journal(path, "moe2sim test", "f") as journal:
        journal.append("row", [{"i": 0}, {"i": 1}])
    path.write_text(path.read_text() + '{"kind": "row", "record": {"i": 2')  # a crash mid-write
    with Journal(path, "moe2sim test", "f") as journal:
        assert journal.records("row") == [{"i": 0}, {"i": 1}]
    assert len(path.read_text().splitlines()) == 3  # rewritten without the torn line


def test_another_fingerprint_or_no_resume_starts_afresh(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path, "moe2sim test", "old") as journal:
        journal.append("row", [{"i": 0}])
    with Journal(path, "moe2sim test", "new") as journal:
        assert journal.records("row") == []
    with Journal(path, "moe2sim test", "new") as journal:
        journal.append("row", [{"i": 1}])
    with Journal(path, "moe2sim test", "new", resume=False) as journal:
        assert journal.records("row") == []
    assert read(path) == ({"journal": "moe2sim test", "fingerprint": "new"}, [])


@pytest.mark.parametrize("text", ["my notes\n", '{"journal": "another tool", "fingerprint": "f"}\n'])
def test_a_file_that_is_not_this_journal_is_never_overwritten(tmp_path, text):
    path = tmp_path / "j.jsonl"
    path.write_text(text)
    with pytest.raises(InputError, match="not a moe2sim test journal"):
        Journal(path, "moe2sim test", "f")
    assert path.read_text() == text
