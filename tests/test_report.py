"""`rag eval retrieval|qa --report`: the HTML page is written, holds its plots and per-question
table, renders in headless Chromium, is served under /v1/reports and linked from the web page."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import httpx
import matplotlib  # noqa: F401  (the report extra, in dev: missing, the suite fails)
import pytest

from tests.conftest import SCIFACT, SQUAD_DEV, invoke

READER_NA = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "reader-minilm-l6-squad-na"


def _tiny_beir(folder: Path, queries: int = 8, extra_docs: int = 10) -> Path:
    """A BEIR folder of SciFact: the first train queries, their relevant abstracts and some others."""
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / "train.tsv").open(encoding="utf-8") as handle:
        for row in list(csv.reader(handle, delimiter="\t"))[1:]:
            if len(qrels) < queries or row[0] in qrels:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    wanted = {doc for docs in qrels.values() for doc in docs}
    kept: list[str] = []
    others = 0
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            doc_id = json.loads(line)["_id"]
            if doc_id in wanted or others < extra_docs:
                others += doc_id not in wanted
                kept.append(line)
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(kept), encoding="utf-8")
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        lines = [line for line in handle if json.loads(line)["_id"] in qrels]
    (folder / "queries.jsonl").write_text("".join(lines), encoding="utf-8")
    rows = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, docs in qrels.items() for d, s in docs.items()]
    (folder / "qrels" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _tiny_squad(path: Path, articles: int = 1, paragraphs: int = 3) -> Path:
    data = json.loads(SQUAD_DEV.read_text(encoding="utf-8"))
    small = [{**a, "paragraphs": a["paragraphs"][:paragraphs]} for a in data["data"][:articles]]
    path.write_text(json.dumps({"version": data.get("version", "1.1"), "data": small}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    beir = _tiny_beir(root / "beir")
    retrieval = invoke(
        "eval", "retrieval", "--beir", str(beir), "--split", "train", "--retriever", "hybrid",
        "--compare", "dense,bm25", "--report", str(root / "out" / "retrieval.html"), "--json", home=home,
    )  # fmt: skip
    assert retrieval.returncode == 0, retrieval.stderr
    squad = _tiny_squad(root / "tiny-squad.json")
    qa = invoke(
        "eval", "qa", "--squad", str(squad), "--mode", "extractive", "--limit", "6",
        "--report", str(root / "out" / "qa.html"), "--json",
        home=home, env={"RAG_READER_MODEL": str(READER_NA)},
    )  # fmt: skip
    assert qa.returncode == 0, qa.stderr
    return {
        "home": home,
        "retrieval": (root / "out" / "retrieval.html").read_text(encoding="utf-8"),
        "retrieval_json": json.loads(retrieval.stdout),
        "qa": (root / "out" / "qa.html").read_text(encoding="utf-8"),
        "qa_json": json.loads(qa.stdout),
        "qa_path": root / "out" / "qa.html",
        "retrieval_path": root / "out" / "retrieval.html",
    }


def test_retrieval_report_has_curves_per_retriever_latency_and_the_queries(reports: dict[str, Any]) -> None:
    page = reports["retrieval"]
    assert 'data-plot="curves"' in page and 'data-plot="latency"' in page
    curves = page.split('data-plot="curves"')[1].split("</figure>")[0]
    for name in ("hybrid (convex)", "dense", "bm25"):
        assert f">{name}<" in curves  # the legend names every retriever
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)  # loads nothing
    summary = reports["retrieval_json"]
    assert f"{summary['ndcg@10']:.4g}" in page  # the headline figure is the CLI's
    table = page.split('id="questions"')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + summary["queries"]
    anchors = set(re.findall(r'href="#(p-[^"]+)"', table))
    assert anchors and all(f'id="{a}"' in page for a in anchors)  # every link lands on a passage


def test_qa_report_has_scores_the_abstention_tradeoff_and_links_to_passages(reports: dict[str, Any]) -> None:
    page = reports["qa"]
    result = reports["qa_json"]
    assert 'data-plot="tradeoff"' in page and 'data-plot="latency"' in page
    assert f"{result['exact_match'] / 100:.4g}" in page
    table = page.split('id="questions"')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + result["questions"]
    anchors = set(re.findall(r'href="#(p-[^"]+)"', table))
    assert anchors and all(f'id="{a}"' in page for a in anchors)


def test_abstention_curve_from_generic_records() -> None:
    from rag.evaluation.report import AnswerRecord, abstention_curve, answer_report

    rows = [  # the shape `rag eval grounding` records have
        {"question": "a", "gold": "x", "prediction": "x", "confidence": 0.9, "found": True, "correct": True},
        {"question": "b", "gold": "y", "prediction": "z", "confidence": 0.8, "found": True, "correct": False},
        {"question": "c", "gold": "w", "prediction": "w", "confidence": 0.5, "found": True, "correct": True},
        {"question": "d", "gold": "v", "prediction": "", "confidence": None, "found": False, "correct": False},
    ]
    points = abstention_curve([AnswerRecord.from_mapping(r) for r in rows])
    assert [(p.threshold, p.answered_rate, round(p.accuracy, 3)) for p in points] == [
        (0.9, 0.25, 1.0),
        (0.8, 0.5, 0.5),
        (0.5, 0.75, 0.667),
    ]
    page = answer_report(rows, {}, "Grounding")
    assert 'data-plot="tradeoff"' in page and "(abstained)" in page


def test_reports_render_in_chromium_with_visible_plots(reports: dict[str, Any], browser: Any, tmp_path: Path) -> None:
    for kind, plots in (("qa", 2), ("retrieval", 2)):
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(reports[f"{kind}_path"].as_uri())
        boxes = [el.bounding_box() for el in page.query_selector_all("figure.plot svg")]
        assert len(boxes) == plots
        assert all(box and box["width"] > 300 and box["height"] > 150 for box in boxes)
        page.click("#questions a[href^='#p-'] >> nth=0")
        assert page.evaluate("document.querySelector(':target').className") == "passage"
        shot = tmp_path / f"{kind}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        page.close()


def test_server_lists_serves_and_the_web_page_links_the_newest_report(reports: dict[str, Any], browser: Any) -> None:
    from api.keys import KeyStore
    from indexes.store import Store
    from tests.test_api import api_settings, start_server

    home = reports["home"]
    assert sorted(p.name for p in (home / "reports").glob("*.html")) == ["qa.html", "retrieval.html"]
    settings = api_settings(home, reader_model=str(READER_NA))
    key = KeyStore(Store(home, settings.sql_url)).create("report-reader", "read")[0]
    _, uv, thread, url = start_server(settings)
    try:
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{url}/v1/reports").status_code == 401
        listed = httpx.get(f"{url}/v1/reports", headers=auth).json()["reports"]
        assert [r["name"] for r in listed] == ["qa.html", "retrieval.html"]  # newest first
        served = httpx.get(f"{url}/v1/reports/qa.html", headers=auth)
        assert served.status_code == 200 and served.text == reports["qa"]
        assert httpx.get(f"{url}/v1/reports/rag.db", headers=auth).status_code == 422  # only *.html names
        assert httpx.get(f"{url}/v1/reports/gone.html", headers=auth).status_code == 404
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#key", key)
        page.dispatch_event("#key", "change")
        page.wait_for_selector("#report-link:not([hidden])", timeout=30_000)
        assert page.inner_text("#report-link") == "evaluation report: qa.html"
        with page.expect_popup() as popup:
            page.click("#report-link")
        opened = popup.value
        opened.wait_for_load_state()
        assert opened.query_selector_all("figure.plot svg")
        page.close()
    finally:
        uv.should_exit = True
        thread.join(timeout=30)


def test_grounding_records_make_the_same_page() -> None:
    """`rag eval grounding --report` hands its records (GroundingRecord.to_dict) to answer_report."""
    from indexes.types import Passage
    from rag.answer import NOT_IN_SOURCES, Answer
    from rag.evaluation.grounding import GroundingRecord
    from rag.evaluation.report import AnswerRecord, abstention_curve, answer_report
    from rag.evaluation.squad import SquadQuestion

    context = "Marie Curie was born in Warsaw. She moved to Paris in 1891."
    passage = Passage(1, 1, context, 0, len(context), 0, "curie.txt", "Curie", None, 1.0, 1)

    def record(n: int, answerable: bool, text: str, margin: float | None, found: bool = True) -> dict[str, Any]:
        question = SquadQuestion(f"q{n}", f"Question {n}?", context, ("Warsaw",), (24,), "Curie", 0, 0)
        answer = Answer(
            text if found else NOT_IN_SOURCES, "generative", passages=[passage], found=found, score=0.5,
            details={"margin": margin, "generated": text},
        )  # fmt: skip
        return GroundingRecord(question, answerable, answer).to_dict()

    rows = [
        record(1, True, "Warsaw", 3.0),
        record(2, False, "Warsaw", 2.0),  # answered an unanswerable question: wrong
        record(3, True, "Paris", 1.0),
        record(4, False, "", None, found=False),
    ]
    points = abstention_curve([AnswerRecord.from_mapping(r) for r in rows])
    assert [(p.threshold, p.answered_rate, round(p.accuracy, 3)) for p in points] == [
        (3.0, 0.25, 1.0),  # thresholds are the records' confidence (the margin), not their score
        (2.0, 0.5, 0.5),
        (1.0, 0.75, 0.333),
    ]
    page = answer_report(rows, {"crag_score": 0.1, "curve": [{"threshold": 0}]}, "Grounding")
    table = page.split('id="questions"')[1].split("</table>")[0]
    assert table.count("<tr") == 5 and len(set(re.findall(r'href="#(p-[^"]+)"', table))) == 1  # one passage text, one anchor
    assert ">crag_score<" in page and 'data-plot="tradeoff"' in page


def test_a_key_limited_to_one_collection_reads_only_that_collections_reports(reports: dict[str, Any]) -> None:
    """Issue 26 item 9: a report shows its collection's questions and passages, so a key scoped to
    another collection gets the same 404 as for a missing report and an empty listing; a report
    that records no collection is for unrestricted keys only."""
    import shutil

    from api.keys import KeyStore
    from indexes.store import Store
    from tests.test_api import api_settings, start_server

    home = reports["home"]
    retrieval_collection = reports["retrieval_json"]["collection"]
    qa_collection = reports["qa_json"]["collection"]
    settings = api_settings(home, reader_model=str(READER_NA))
    keys = KeyStore(Store(home, settings.sql_url))
    attacker = keys.create("attacker", "write", qa_collection)[0]  # may read the QA collection only
    everything = keys.create("admin-reader", "read")[0]
    legacy = home / "reports" / "legacy.html"  # as written before reports recorded a collection
    shutil.copyfile(home / "reports" / "retrieval.html", legacy)
    secret = retrieval_collection
    _, uv, thread, url = start_server(settings)
    try:

        def get(path: str, key: str) -> httpx.Response:
            return httpx.get(f"{url}{path}", headers={"Authorization": f"Bearer {key}"}, timeout=60)

        assert [r["name"] for r in get("/v1/reports", attacker).json()["reports"]] == ["qa.html"]
        for name in ("retrieval.html", "legacy.html"):
            stolen = get(f"/v1/reports/{name}", attacker)
            assert stolen.status_code == 404, name
            assert "<html" not in stolen.text.lower() and secret not in stolen.text
        assert get("/v1/reports/qa.html", attacker).status_code == 200
        assert sorted(r["name"] for r in get("/v1/reports", everything).json()["reports"]) == [
            "legacy.html", "qa.html", "retrieval.html",
        ]  # fmt: skip
        for name in ("retrieval.html", "legacy.html", "qa.html"):
            assert get(f"/v1/reports/{name}", everything).status_code == 200
        assert retrieval_collection != qa_collection
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        legacy.unlink()
