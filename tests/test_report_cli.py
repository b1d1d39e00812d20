"""`sleepy report` and `sleepy rescore`: reports from saved run files, no rerun."""

from __future__ import annotations

import json

import pytest

from pytest_sleepy.cli import main
from pytest_sleepy.corpus.importers import koan_to_toml
from pytest_sleepy.koans import load_koan
from pytest_sleepy.results import Outcome, RunFile, RunSummary, read_run_file, write_run_file

from conftest import FIXED_SHOP, make_koan

KOANS = [f"bc_{n:03d}" for n in range(1, 7)]


def outcomes(solved: set[str], strategy: str = "baseline", digest: str = "d1") -> list[Outcome]:
    return [Outcome(koan=k, strategy=strategy, sample=0, seed=0, status="passed" if k in solved else "failed",
                    reason="" if k in solved else "still E0382 after 3 steps", family="borrow_checker",
                    pattern="use_after_move", split="eval", koan_digest=digest, steps=1)
            for k in KOANS]


def save(path, run_id: str, items: list[Outcome], strategies=("baseline",), **provenance) -> None:
    base = {"strategies": [{"name": s} for s in strategies], "model": {"spec": "rustfix", "identities": []},
            "options": {"samples": 1}, "rustc": "rustc 1.95.0"}
    write_run_file(path, RunFile(run_id, base | provenance, items,
                                 RunSummary.from_outcomes(items, list(strategies)).to_dict()))


@pytest.fixture
def runs(tmp_path):
    """A baseline (bc_001..bc_003 solved) and a two-strategy run: baseline as before,
    hints losing bc_001 and gaining bc_004."""
    save(tmp_path / "base.json", "base-run", outcomes({"bc_001", "bc_002", "bc_003"}))
    save(tmp_path / "run.json", "new-run",
         outcomes({"bc_001", "bc_002", "bc_003"}) + outcomes({"bc_002", "bc_003", "bc_004"}, "hints"),
         strategies=("baseline", "hints"))
    return tmp_path


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_report_reprints_the_summary_from_the_run_file(runs, capsys):
    status, out, _ = run(capsys, "report", runs / "run.json")
    assert status == 0
    assert out.startswith("run new-run\n")
    assert "baseline    6        3         50.0%" in out
    assert "hints vs baseline  1        1         +0     1" in out


def test_report_against_a_baseline_draws_the_forgetting_matrix(runs, capsys):
    status, out, _ = run(capsys, "report", runs / "run.json", "--vs", runs / "base.json")
    assert status == 0
    assert "against the baseline run base-run" in out
    assert "note: hints is not in the baseline run: compared with its 'baseline' strategy" in out
    matrix = out[out.index("forgetting matrix"):]
    assert "bc_001  P                         P           -" in matrix
    assert "bc_004  .                         .           +" in matrix
    assert "bc_005" not in matrix  # unchanged rows are left out by default


def test_report_matrix_full_shows_every_koan(runs, capsys):
    _, out, _ = run(capsys, "report", runs / "run.json", "--vs", runs / "base.json", "--matrix", "full")
    assert "bc_005" in out[out.index("forgetting matrix"):]


def test_report_in_markdown_is_github_tables(runs, capsys):
    _, out, _ = run(capsys, "report", runs / "run.json", "--vs", runs / "base.json", "--format", "markdown")
    assert out.startswith("## pytest-sleepy: run new-run against base-run")
    assert "### pass rates by strategy (model rustfix)" in out
    assert "| strategy   | koans   |" in out and "|------------|" in out


def test_report_as_json_holds_the_numbers(runs, capsys):
    _, out, _ = run(capsys, "report", runs / "run.json", "--vs", runs / "base.json", "--format", "json")
    data = json.loads(out)
    assert [s["rate"] for s in data["summary"]["strategies"]] == [0.5, 0.5]
    assert data["matrix"]["rows"]["bc_004"] == [".", ".", "+"]
    assert {(c["koan"], c["strategy"], c["symbol"]) for c in data["baseline"]["changes"]} >= {("bc_001", "hints", "-")}


def test_report_writes_to_a_file_when_asked(runs, capsys):
    status, out, _ = run(capsys, "report", runs / "run.json", "--format", "markdown", "-o", runs / "out" / "r.md")
    assert status == 0 and out == ""
    assert (runs / "out" / "r.md").read_text().startswith("## pytest-sleepy: run new-run")


def test_report_lists_koans_changed_since_the_baseline_apart(tmp_path, capsys):
    save(tmp_path / "base.json", "base-run", outcomes({"bc_001"}))
    save(tmp_path / "run.json", "new-run", outcomes(set(), digest="d2"))
    _, out, _ = run(capsys, "report", tmp_path / "run.json", "--vs", tmp_path / "base.json")
    assert "changed since the baseline: bc_001, bc_002" in out
    assert "REGRESSION" not in out


def test_report_draws_a_heatmap(runs, capsys):
    pytest.importorskip("matplotlib")
    status, _, err = run(capsys, "report", runs / "run.json", "--vs", runs / "base.json", "--heatmap", runs / "h.png")
    assert status == 0 and "heatmap:" in err
    assert (runs / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_file_that_is_not_a_run_file_is_an_error_naming_it(tmp_path, capsys):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    status, _, err = run(capsys, "report", tmp_path / "x.json")
    assert status == 2 and "x.json: field 'format'" in err


def test_report_prints_continual_learning_metrics_for_staged_runs(tmp_path, capsys):
    items = []
    for stage, solved in ((0, set()), (1, {"bc_001", "bc_002", "bc_003"}), (2, {"bc_002", "bc_004", "bc_005"})):
        for o in outcomes(solved, "lora"):
            o.stage, o.pattern = stage, "early" if o.koan in ("bc_001", "bc_002", "bc_003") else "late"
            items.append(o)
    curriculum = {"order": ["g1", "g2"], "groups": {"g1": ["early"], "g2": ["late"]}}
    save(tmp_path / "cl.json", "cl-run", items, strategies=("lora",), curriculum=curriculum)
    status, out, _ = run(capsys, "report", tmp_path / "cl.json")
    assert status == 0
    assert "continual learning: lora" in out
    assert "ACC 50.0%" in out  # after stage 2: g1 1/3, g2 2/3
    assert "BWT -66.7 pp" in out  # g1 fell from 3/3 to 1/3


def test_rescore_reverifies_stored_candidates_without_a_model(tmp_path, capsys):
    corpus = tmp_path / "koans" / "borrow_checker"
    corpus.mkdir(parents=True)
    (corpus / "shop_001.toml").write_text(koan_to_toml(make_koan()))
    koan = load_koan(corpus / "shop_001.toml")
    recorded = Outcome(koan=koan.id, strategy="baseline", sample=0, seed=0, status="failed",
                       reason="hidden tests failed: 1 of 2 (sums_prices) after 1 step", family=koan.family,
                       pattern=koan.pattern, split=koan.split, koan_digest=koan.digest, steps=1)
    save(tmp_path / "run.json", "old-run", [recorded])
    (tmp_path / "ep.jsonl").write_text(json.dumps({
        "run_id": "old-run", "koan": koan.id, "koan_digest": koan.digest, "strategy": "baseline", "sample": 0,
        "seed": 0, "step": 1, "code": FIXED_SHOP, "verdict": {"passed": False}}) + "\n")
    status, out, _ = run(capsys, "rescore", tmp_path / "run.json", "--episodes", tmp_path / "ep.jsonl",
                         "--koans", tmp_path / "koans", "--cache-dir", tmp_path / "cache")
    assert status == 0
    assert "rescored 1 outcome(s) of run old-run; 1 changed" in out
    rescored = read_run_file(tmp_path / "run.rescored.json")
    assert rescored.outcomes[0].solved and rescored.provenance["rescored"]["from_rustc"] == "rustc 1.95.0"


def test_rescore_with_a_malformed_episode_file_names_the_line(tmp_path, capsys):
    save(tmp_path / "run.json", "old-run", outcomes(set()))
    (tmp_path / "ep.jsonl").write_text("{}\n{ torn\n")
    status, _, err = run(capsys, "rescore", tmp_path / "run.json", "--episodes", tmp_path / "ep.jsonl")
    assert status == 2 and "ep.jsonl, line 2" in err
