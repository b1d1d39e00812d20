"""Eval suites: frozen, named sets of eval koans that run files record and comparisons respect."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from pytest_sleepy.cli import main
from pytest_sleepy.corpus.suites import SuiteError, frozen_table, load_suites, select_suite
from pytest_sleepy.koans import load_corpus
from pytest_sleepy.results import read_run_file

from conftest import EVAL, KOANS, REPO_ROOT


@pytest.fixture
def corpus_dir(tmp_path):
    """The bench koans in a plain folder: four eval koans and one train koan."""
    for koan, family in KOANS.items():
        (tmp_path / "koans" / family).mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / "koans" / family / f"{koan}.toml", tmp_path / "koans" / family)
    return tmp_path / "koans"


def freeze(corpus_dir, name, ids):
    koans = [k for k in load_corpus(corpus_dir) if k.id in ids]
    with open(corpus_dir / "suites.toml", "a") as handle:
        handle.write(frozen_table(name, f"{name} for tests", koans))


def edit_buggy(corpus_dir, koan_id):
    path = corpus_dir / KOANS[koan_id] / f"{koan_id}.toml"
    path.write_text(path.read_text().replace("buggy = '''", "buggy = '''\n// edited", 1))


def test_a_corpus_without_suites_has_one_unversioned_suite_of_its_eval_koans(corpus_dir):
    [suite] = load_suites(corpus_dir, load_corpus(corpus_dir))
    assert suite.name == "eval" and sorted(suite.koans) == sorted(EVAL)


def test_the_newest_suite_is_the_default(corpus_dir):
    freeze(corpus_dir, "eval-v1", ["bc_001", "bc_003"])
    freeze(corpus_dir, "eval-v2", EVAL)
    corpus = load_corpus(corpus_dir)
    assert select_suite(corpus_dir, corpus, None).name == "eval-v2"
    assert sorted(select_suite(corpus_dir, corpus, "eval-v1").koans) == ["bc_001", "bc_003"]


def test_an_unknown_suite_lists_the_known_ones(corpus_dir):
    freeze(corpus_dir, "eval-v1", EVAL)
    with pytest.raises(SuiteError, match="unknown suite 'eval-v9'; .*suites.toml has eval-v1"):
        select_suite(corpus_dir, load_corpus(corpus_dir), "eval-v9")


def test_a_frozen_koan_that_changed_is_an_error_naming_it(corpus_dir):
    freeze(corpus_dir, "eval-v1", EVAL)
    edit_buggy(corpus_dir, "rh_001")
    with pytest.raises(SuiteError, match=r"suite eval-v1 .*koan rh_001 changed since the suite was frozen .*rh_001.toml"):
        select_suite(corpus_dir, load_corpus(corpus_dir), None)


def test_a_frozen_koan_that_is_gone_is_an_error_naming_it(corpus_dir):
    freeze(corpus_dir, "eval-v1", EVAL)
    (corpus_dir / "trait_bounds" / "tb_008.toml").unlink()
    with pytest.raises(SuiteError, match="koan tb_008 is missing"):
        select_suite(corpus_dir, load_corpus(corpus_dir), None)


def test_the_digest_follows_the_content_of_the_koans(corpus_dir):
    freeze(corpus_dir, "eval-v1", EVAL)
    before = load_suites(corpus_dir, load_corpus(corpus_dir))[0].digest
    edit_buggy(corpus_dir, "bc_001")
    (corpus_dir / "suites.toml").unlink()
    freeze(corpus_dir, "eval-v1", EVAL)
    assert load_suites(corpus_dir, load_corpus(corpus_dir))[0].digest != before


def test_a_suites_file_without_koans_names_the_suite_and_the_fix(corpus_dir):
    (corpus_dir / "suites.toml").write_text('[eval-v1]\ndescription = "x"\n')
    with pytest.raises(SuiteError, match="suite 'eval-v1': needs a `koans` table .*sleepy koans freeze"):
        load_suites(corpus_dir, load_corpus(corpus_dir))


def test_the_repository_suite_eval_v1_is_intact():
    corpus = load_corpus(REPO_ROOT / "koans")
    suite = select_suite(REPO_ROOT / "koans", corpus, "eval-v1")
    assert len(suite.koans) == 30
    assert {k.family for k in suite.members(corpus)} == {"borrow_checker", "result_handling", "trait_bounds"}


# -- the command line ------------------------------------------------------------------


def test_freeze_appends_a_suite_of_every_eval_koan(corpus_dir, capsys):
    freeze(corpus_dir, "eval-v1", ["bc_001"])
    assert main(["koans", "freeze", "eval-v2", "--koans", str(corpus_dir), "--description", "all four"]) == 0
    assert "froze eval-v2: 4 eval koans, digest " in capsys.readouterr().out
    suites = load_suites(corpus_dir, load_corpus(corpus_dir))
    assert [s.name for s in suites] == ["eval-v1", "eval-v2"] and sorted(suites[1].koans) == sorted(EVAL)


def test_freeze_refuses_a_name_already_frozen(corpus_dir, capsys):
    freeze(corpus_dir, "eval-v1", EVAL)
    assert main(["koans", "freeze", "eval-v1", "--koans", str(corpus_dir)]) == 2
    assert "already has a suite 'eval-v1'" in capsys.readouterr().err


def test_list_shows_the_suites_and_the_eval_koans_in_none(corpus_dir, capsys):
    freeze(corpus_dir, "eval-v1", ["bc_001", "bc_003"])
    assert main(["koans", "list", "--koans", str(corpus_dir)]) == 0
    out = capsys.readouterr().out
    assert "eval-v1 (default)        2" in out
    assert "2 eval koan(s) in no suite yet (not collected): rh_001, tb_008" in out


def test_report_refuses_to_compare_runs_of_different_suites(tmp_path, capsys):
    run = {"format": "pytest-sleepy/run", "version": 1, "run_id": "r", "outcomes": [], "aggregates": {},
           "provenance": {"suite": {"name": "eval-v2", "digest": "b" * 16, "koans": 200}}}
    base = dict(run, run_id="b", provenance={"suite": {"name": "eval-v1", "digest": "a" * 16, "koans": 30}})
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "base.json").write_text(json.dumps(base))
    assert main(["report", str(tmp_path / "run.json"), "--vs", str(tmp_path / "base.json")]) == 2
    err = capsys.readouterr().err
    assert "ran suite eval-v1 (digest aaaaaaaaaaaaaaaa, 30 koans)" in err and "suite eval-v2 (digest bbbb" in err


# -- the plugin -------------------------------------------------------------------------


def test_the_run_collects_the_suites_koans_and_records_the_suite(bench):
    freeze(bench.path / "koans", "eval-v1", ["bc_001", "tb_008"])
    result = bench.runpytest("--sleepy-json=run.json")
    result.assert_outcomes(passed=2)
    suite = read_run_file(bench.path / "run.json").provenance["suite"]
    assert suite["name"] == "eval-v1" and suite["koans"] == 2
    result.stdout.fnmatch_lines([f"pass rates by strategy (suite eval-v1 (digest {suite['digest']}), model rustfix)"])


def test_an_older_suite_is_chosen_by_name(bench):
    freeze(bench.path / "koans", "eval-v1", ["bc_001"])
    freeze(bench.path / "koans", "eval-v2", EVAL)
    bench.runpytest("--sleepy-suite=eval-v1").assert_outcomes(passed=1)


def test_a_changed_frozen_koan_stops_the_session_naming_it(bench):
    freeze(bench.path / "koans", "eval-v1", EVAL)
    edit_buggy(bench.path / "koans", "bc_003")
    result = bench.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*suite eval-v1 *koan bc_003 changed since the suite was frozen*sleepy koans freeze*"])


def test_a_baseline_of_another_suite_is_refused_naming_both(bench):
    freeze(bench.path / "koans", "eval-v1", ["bc_001", "bc_003"])
    bench.runpytest("--sleepy-json=base.json")
    freeze(bench.path / "koans", "eval-v2", EVAL)
    result = bench.runpytest("--sleepy-baseline=base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*base.json ran suite eval-v1 (digest *, 2 koans); this run is suite eval-v2 "
                                 "(digest *, 4 koans)*--sleepy-suite=eval-v1*"])
    bench.runpytest("--sleepy-baseline=base.json", "--sleepy-suite=eval-v1").assert_outcomes(passed=1, xfailed=1)


def test_the_draft_suite_runs_every_eval_koan_as_it_stands(bench):
    freeze(bench.path / "koans", "eval-v1", ["bc_001"])
    result = bench.runpytest("--sleepy-suite=draft", "--sleepy-json=run.json")
    result.assert_outcomes(passed=2, failed=2)
    assert read_run_file(bench.path / "run.json").provenance["suite"]["name"] == "draft"


def test_draft_cannot_be_frozen_as_a_name(corpus_dir, capsys):
    assert main(["koans", "freeze", "draft", "--koans", str(corpus_dir)]) == 2
    assert "'draft' means the eval koans in no suite yet" in capsys.readouterr().err


def test_an_unversioned_corpus_compares_a_changed_koan_apart_instead_of_refusing(bench):
    bench.runpytest("--sleepy-json=base.json")
    edit_buggy(bench.path / "koans", "bc_003")
    result = bench.runpytest("--sleepy-baseline=base.json")
    assert result.ret != pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*changed since the baseline: bc_003*"])


# -- sleepy koans stats ------------------------------------------------------------------


def test_stats_count_families_codes_difficulties_and_multi_error_koans(corpus_dir, capsys):
    freeze(corpus_dir, "eval-v1", EVAL)
    assert main(["koans", "stats", "--koans", str(corpus_dir)]) == 0
    out = capsys.readouterr().out
    koans = [k for k in load_corpus(corpus_dir) if k.id in EVAL]
    assert "suite eval-v1 (digest " in out and "): 4 koans" in out
    assert re.search(r"borrow_checker +2 \(50\.0%\)", out) and re.search(r"trait_bounds +1 \(25\.0%\)", out)
    multi = sum(len(set(k.expect)) >= 2 for k in koans)
    assert f"multi-error koans (two or more codes in expect): {multi} ({100 * multi / 4:.1f}%)" in out
    for code in {c for k in koans for c in k.expect}:
        assert code in out


def test_stats_name_the_koans_without_a_current_proof(corpus_dir, capsys):
    freeze(corpus_dir, "eval-v1", EVAL)
    main(["koans", "stats", "--koans", str(corpus_dir)])
    assert "without a current proof (4; run `sleepy koans validate --mutants --record`): bc_001, bc_003" in capsys.readouterr().out


def test_stats_give_the_share_a_rustfix_run_repaired(bench, capsys):
    freeze(bench.path / "koans", "eval-v1", EVAL)
    bench.runpytest("--sleepy-json=run.json")
    assert main(["koans", "stats", "--koans", str(bench.path / "koans"), "--rustfix", str(bench.path / "run.json")]) == 0
    assert "rustfix repairs 2 (50.0%) (95% CI 15.0-85.0%" in capsys.readouterr().out


def test_stats_refuse_a_rustfix_run_of_another_suite_naming_both(bench, capsys):
    freeze(bench.path / "koans", "eval-v1", ["bc_001"])
    bench.runpytest("--sleepy-json=run.json")
    freeze(bench.path / "koans", "eval-v2", EVAL)
    assert main(["koans", "stats", "--koans", str(bench.path / "koans"), "--rustfix", str(bench.path / "run.json")]) == 2
    err = capsys.readouterr().err
    assert "run.json: it ran the suite 'eval-v1' (digest " in err and "not 'eval-v2' (digest " in err
    assert "pass a rustfix run of eval-v2" in err


def test_stats_refuse_a_rustfix_run_of_part_of_the_suite(bench, capsys):
    freeze(bench.path / "koans", "eval-v1", EVAL)
    bench.runpytest("--sleepy-json=run.json", "-k", "bc_001")
    assert main(["koans", "stats", "--koans", str(bench.path / "koans"), "--rustfix", str(bench.path / "run.json")]) == 2
    assert "it ran 1 of the suite's 4 koans with 1 strategies" in capsys.readouterr().err


def test_the_repository_suite_eval_v2_meets_its_authoring_rules():
    """200 eval koans, at least ten families, none over 15 %, logic bugs at least 15 %,
    at least 20 % multi-error, a difficulty each, and every one proven at >= 90 %."""
    from pytest_sleepy.corpus.proofs import PROOFS_FILE, ProofLedger, rustc_release
    from pytest_sleepy.corpus.statistics import suite_statistics
    from pytest_sleepy.verify.sandbox import Toolchain

    corpus = load_corpus(REPO_ROOT / "koans")
    suite = select_suite(REPO_ROOT / "koans", corpus, "eval-v2")
    rustc = rustc_release(Toolchain.detect().version)
    stats = suite_statistics(suite, suite.members(corpus), ProofLedger.read(REPO_ROOT / "koans" / PROOFS_FILE, rustc), rustc)
    assert stats.koans >= 200 and len(stats.families) >= 10
    assert max(stats.families.values()) <= 0.15 * stats.koans and stats.families["logic"] >= 0.15 * stats.koans
    assert len(stats.multi_error) >= 0.20 * stats.koans
    assert set(stats.difficulties) <= {1, 2, 3}
    assert stats.unproven == [] and min(stats.scores.values()) >= 0.90
