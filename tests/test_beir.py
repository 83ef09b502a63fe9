"""Reading a BEIR folder for `rag eval retrieval`: a malformed qrels or queries file is a clear
error naming the file and line, never a traceback, and nothing to evaluate is said as such."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexes.errors import InvalidInput
from rag.evaluation.retrieval import read_beir


def beir(tmp_path: Path, qrels: bytes, queries: bytes = b'{"_id": "q1", "text": "hi"}\n') -> Path:
    (tmp_path / "qrels").mkdir(parents=True)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "hello"}\n', encoding="utf-8")
    (tmp_path / "queries.jsonl").write_bytes(queries)
    (tmp_path / "qrels" / "test.tsv").write_bytes(qrels)
    return tmp_path


def test_a_well_formed_folder_reads_with_or_without_a_qrels_header(tmp_path: Path) -> None:
    bare = read_beir(beir(tmp_path / "bare", b"q1\td1\t1\n"))
    headed = read_beir(beir(tmp_path / "headed", b"query-id\tcorpus-id\tscore\nq1\td1\t1\n"))
    for data in (bare, headed):
        assert (data.queries, data.qrels) == ({"q1": "hi"}, {"q1": {"d1": 1}})


@pytest.mark.parametrize(
    ("qrels", "queries", "message"),
    [
        (b"query-id\tcorpus-id\tscore\nq1\td1\tnotanumber\n", None, r"qrels/test.tsv:2: the score 'notanumber' is not an integer"),
        (b"query-id\tcorpus-id\tscore\nq1\td1\t1\n\xff\n", None, r"qrels/test.tsv: not valid UTF-8"),
        (b"q1\td1\t1\n", b'{"_id": "q1", "text": "hi"\n', r"queries.jsonl:1: not a BEIR query"),
        (b"q1\td1\t1\n", b'{"id": "q1"}\n', r"queries.jsonl:1: not a BEIR query"),
        (b"q1\td1\t1\n", b'{"_id": "q2", "text": "other"}\n', r"no query of .*queries.jsonl has a judgement in .*qrels/test.tsv"),
    ],
)
def test_malformed_beir_files_are_refused_with_file_and_line(tmp_path: Path, qrels: bytes, queries: bytes | None, message: str) -> None:
    folder = beir(tmp_path, qrels) if queries is None else beir(tmp_path, qrels, queries)
    with pytest.raises(InvalidInput, match=message):
        read_beir(folder)
