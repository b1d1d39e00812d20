"""The HTML view of a run (pytest_sleepy/results/view.py): one self-contained file,
checked as text and in a real browser (Debian's chromium through selenium).

The run shown is the committed reference run of the real model: baseline and hints on
eval-v1, with every attempt's episode."""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import REPO_ROOT
from pytest_sleepy.cli import main
from pytest_sleepy.results import read_episodes, read_run_file
from pytest_sleepy.results.report import build_report
from pytest_sleepy.results.view import page_id, render_view

REFERENCE = REPO_ROOT / "results" / "qwen2.5-coder-1.5b-instruct-q4_k_m"
LOST = ["bc_008", "bc_009", "rh_001", "rh_005", "tb_001", "tb_002"]  # by hints, against baseline (README)


@pytest.fixture(scope="module")
def reference_view(tmp_path_factory):
    """The view of baseline and hints together, as one two-strategy run."""
    runs = [read_run_file(REFERENCE / f"run-{name}.json") for name in ("baseline", "hints")]
    outcomes = [o for run in runs for o in run.outcomes]
    episodes = [e for name in ("baseline", "hints") for e in read_episodes(REFERENCE / f"episodes-{name}.jsonl")]
    report = build_report(outcomes, runs[1].provenance, strategies=["baseline", "hints"],
                          model=runs[1].provenance["model"]["spec"])
    html = render_view(report, outcomes, run_id="reference", episodes=episodes,
                       episode_runs={run.run_id for run in runs})
    path = tmp_path_factory.mktemp("view") / "report.html"
    path.write_text(html)
    return path


# -- the file ----------------------------------------------------------------------------


def test_the_view_names_nothing_to_fetch(reference_view):
    html = reference_view.read_text()
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc\s*=", html)


def test_every_koan_and_strategy_has_a_page_with_every_attempt(reference_view):
    html = reference_view.read_text()
    for koan in ("bc_001", "tb_010"):
        for strategy in ("baseline", "hints"):
            assert f'id="{page_id(koan, strategy)}"' in html
    steps = [e for e in read_episodes(REFERENCE / "episodes-hints.jsonl") if e["koan"] == "bc_008"]
    page = html.split(f'id="{page_id("bc_008", "hints")}"')[1].split('class="page"')[0]
    assert page.count('<div class="step">') == len(steps) == 3


def test_model_answers_are_escaped_not_markup(tmp_path):
    run = read_run_file(REFERENCE / "run-baseline.json")
    episodes = read_episodes(REFERENCE / "episodes-baseline.jsonl")[:1]
    episodes[0]["response"] = "<script>alert('pwned')</script>"
    report = build_report(run.outcomes, run.provenance, strategies=["baseline"])
    html = render_view(report, run.outcomes, run_id=run.run_id, episodes=episodes)
    assert "<script>alert(" not in html and "&lt;script&gt;alert(" in html


def test_sleepy_view_writes_the_view_of_a_run_file_with_its_episodes(tmp_path, capsys):
    out = tmp_path / "view.html"
    assert main(["view", str(REFERENCE / "run-hints.json"), "--vs", str(REFERENCE / "run-baseline.json"),
                 "--episodes", str(REFERENCE / "episodes-hints.jsonl"), "-o", str(out)]) == 0
    html = out.read_text()
    assert "against" in html and "Regression gate" not in html
    assert html.count('<div class="step">') == len(read_episodes(REFERENCE / "episodes-hints.jsonl"))


def test_sleepy_view_refuses_episodes_of_another_run(tmp_path, capsys):
    assert main(["view", str(REFERENCE / "run-hints.json"), "--episodes", str(REFERENCE / "episodes-baseline.jsonl"),
                 "-o", str(tmp_path / "view.html")]) == 2
    assert "no episode of run" in capsys.readouterr().err


def test_pytest_writes_the_view_with_each_attempt(bench):
    bench.runpytest("--sleepy-html=report.html", "--max-steps=1", "-n", "2")
    html = (bench.path / "report.html").read_text()
    assert html.count('class="page"') == 4 and html.count('<div class="step">') == 4
    # rustfix repairs bc_001 and tb_008, and has no suggestion for bc_003 and rh_001.
    assert html.count('<span class="verdict-passed">passed</span>') == 2
    assert html.count("<span class=\"\">no code in the answer</span>") == 2


# -- in a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("chromium and chromedriver are not installed: apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def visible_rows(browser) -> list[str]:
    rows = browser.find_elements("css selector", "#koan-index tr.koan-row")
    return [row.text for row in rows if row.is_displayed()]


def choose(browser, name: str, value: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", f"filter-{name}")).select_by_visible_text(value)


def test_the_outcome_filter_shows_the_koans_hints_lost(browser, reference_view):
    browser.get(reference_view.as_uri())
    assert len(visible_rows(browser)) == 60
    choose(browser, "outcome", "lost")
    rows = visible_rows(browser)
    assert sorted(row.split()[0] for row in rows) == LOST
    assert all(" hints " in f" {row} " for row in rows)
    assert browser.find_element("id", "filter-count").text == "6 of 60 shown"


def test_filters_combine_with_the_search_box(browser, reference_view):
    browser.get(reference_view.as_uri())
    choose(browser, "family", "trait_bounds")
    choose(browser, "strategy", "hints")
    assert len(visible_rows(browser)) == 10
    browser.find_element("id", "filter-search").send_keys("E0119")
    # The hints koans of trait_bounds that still fail with E0119, as the run file says.
    expected = sorted(o.koan for o in read_run_file(REFERENCE / "run-hints.json").outcomes
                      if o.koan.startswith("tb_") and "E0119" in o.reason)
    assert expected and sorted(row.split()[0] for row in visible_rows(browser)) == expected


def test_a_lost_koans_page_shows_its_failing_verdict(browser, reference_view):
    browser.get(reference_view.as_uri())
    choose(browser, "outcome", "lost")
    browser.find_element("link text", "bc_008").click()
    page = browser.find_element("id", page_id("bc_008", "hints"))
    assert page.is_displayed()
    assert "lost" in page.text and "verdict: does not compile: E0596" in page.text
    assert not browser.find_element("id", page_id("bc_001", "hints")).is_displayed()


def test_a_forgetting_matrix_cell_opens_the_koans_page(browser, reference_view):
    browser.get(reference_view.as_uri())
    browser.find_element("css selector", f'#matrix a[href="#{page_id("rh_005", "hints")}"]').click()
    assert browser.find_element("id", page_id("rh_005", "hints")).is_displayed()


def test_the_browser_loads_nothing_but_the_file(browser, reference_view):
    browser.get(reference_view.as_uri())
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


# -- what only some runs have ---------------------------------------------------------------


def staged_and_routed_run(path):
    """A run of a staged strategy (two training stages) and a routed one."""
    from pytest_sleepy.results import Outcome, RunFile, RunSummary, write_run_file

    items = []
    for stage, solved in ((0, set()), (1, {"bc_001", "bc_002"}), (2, {"bc_002", "bc_003"})):
        for koan in ("bc_001", "bc_002", "bc_003", "bc_004"):
            items.append(Outcome(koan=koan, strategy="lora", sample=0, seed=0, status="passed" if koan in solved
                                 else "failed", reason="" if koan in solved else "still E0382 after 1 step",
                                 family="borrow_checker", pattern="early" if koan < "bc_003" else "late",
                                 split="eval", koan_digest="d", steps=1, stage=stage, variant=f"stage{stage}"))
    for koan, pattern, route in (("bc_001", "early", "early"), ("bc_002", "early", "late"), ("bc_003", "late", "late")):
        items.append(Outcome(koan=koan, strategy="share_routed", sample=0, seed=0, status="passed", reason="",
                             family="borrow_checker", pattern=pattern, split="eval", koan_digest="d", steps=1,
                             route=route))
    provenance = {"strategies": [{"name": "lora"}, {"name": "share_routed"}], "model": {"spec": "hf:tiny"},
                  "options": {"samples": 1}, "curriculum": {"order": ["g1", "g2"],
                                                            "groups": {"g1": ["early"], "g2": ["late"]}}}
    write_run_file(path, RunFile("staged", provenance, items,
                                 RunSummary.from_outcomes(items, ["lora", "share_routed"]).to_dict()))


def test_the_view_shows_continual_learning_metrics_and_the_routers_confusion(tmp_path):
    staged_and_routed_run(tmp_path / "run.json")
    assert main(["view", str(tmp_path / "run.json"), "-o", str(tmp_path / "view.html")]) == 0
    html = (tmp_path / "view.html").read_text()
    assert "continual learning: lora" in html and "ACC " in html and "BWT " in html
    assert "router of share_routed" in html


def test_pages_of_look_alike_strategies_and_samples_have_their_own_anchors():
    ids = {page_id("bc_001", "lora:stage1"), page_id("bc_001", "lora_stage1"), page_id("bc_001", "lora_stage1", 1)}
    assert len(ids) == 3


def test_each_sample_is_labelled_by_what_it_did(tmp_path):
    """A koan solved in two samples of three keeps passing; its failed sample is still
    failing, not "solved"."""
    from pytest_sleepy.results import Outcome

    items = [Outcome(koan="bc_001", strategy="baseline", sample=n, seed=n, status=status, reason=reason,
                     family="borrow_checker", pattern="use_after_move", split="eval", koan_digest="d", steps=1)
             for n, (status, reason) in enumerate([("passed", ""), ("failed", "still E0382 after 1 step"),
                                                   ("passed", "")])]
    report = build_report(items, {}, strategies=["baseline"])
    html = render_view(report, items, run_id="r")
    rows = re.findall(r'<tr class="koan-row"[^>]*data-outcome="([^"]+)"', html)
    assert rows == ["solved", "still failing", "solved"]


def test_a_bad_line_in_the_episodes_leaves_the_view_without_attempts(bench):
    bench.runpytest("--sleepy-html=report.html", "--sleepy-episodes=ep.jsonl", "--max-steps=1")
    with open(bench.path / "ep.jsonl", "a") as handle:
        handle.write("{not json\n")
    result = bench.runpytest("--sleepy-html=report.html", "--sleepy-episodes=ep.jsonl", "--max-steps=1")
    result.stdout.fnmatch_lines(["warning: the view shows no attempts: *ep.jsonl, line *: not JSON*"])
    assert 'class="page"' in (bench.path / "report.html").read_text()
