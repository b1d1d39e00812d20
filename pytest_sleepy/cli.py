"""The `sleepy` command.

    sleepy koans list [--split eval|train] [--suite NAME] [--family F] [--pattern P]
    sleepy koans freeze NAME [--description TEXT]
    sleepy koans show ID
    sleepy koans check ID FILE [--json]
    sleepy koans validate [PATH ...] [-j N] [--mutants [--record]]
    sleepy koans import --format seed-json FILE --out DIR [--split eval|train]
    sleepy koans import --format rustlings DIR --out DIR [--split eval|train]
    sleepy strategies [--strategies DIR]
    sleepy report RUN.json [--vs BASE.json] [--format text|markdown|json] [--matrix full|changed|off]
                  [--heatmap OUT.png] [--alpha A] [-o FILE]
    sleepy rescore RUN.json --episodes EP.jsonl [-o OUT.json] [--koans DIR] [...]
    sleepy variants [--split train|eval|all] [--per-koan N] [--seed S] [--koan ID ...] [-j N] -o FILE.jsonl
    sleepy data sft VARIANTS.jsonl -o FILE.jsonl [--strategy NAME] [--run RUN.json]
    sleepy data dpo EPISODES.jsonl -o FILE.jsonl
    sleepy data audit FILE.jsonl [--format text|markdown]
    sleepy cache rekey [DIR]
    sleepy adapters list [--kind KIND]
    sleepy adapters show KEY
    sleepy adapters delete KEY
    sleepy adapters export KEY -o DIR [--name NAME] [--force]
    sleepy feedback list EPISODES.jsonl [--slow SECONDS]
    sleepy feedback add EPISODE_ID --episodes EPISODES.jsonl (--critical|--medium|--good) [--note TEXT]
                        [--fix FILE] [--allow-eval] [--no-train]
    sleepy feedback status
    sleepy feedback train

Every `feedback` command but `list` takes `--feedback-dir DIR` (default: [tool.sleepy.feedback]
dir of ./pyproject.toml, or ./.sleepy/feedback).

Every `adapters` command takes `--artifacts DIR` (the artifact store; default
$SLEEPY_ARTIFACTS_DIR or ./.sleepy/artifacts); KEY may be the start of a key.

Every `koans` command takes `--koans DIR` (the corpus; default ./koans), `--no-cache`
(do not read or write the verification cache), `--cache-dir DIR` (default
$SLEEPY_CACHE_DIR or ./.sleepy/cache), `--max-candidate-kib N` (refuse larger candidates;
default 256) and `--unsafe-no-sandbox` (run without bubblewrap; model-written code then
runs with your rights).

Exit status: 0 success, 1 a check failed (a candidate did not pass, a koan is bad),
2 bad input or a missing tool, with a message saying what to do.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from tabulate import tabulate

from .results.comparison import suite_mismatch
from .bundled import KOANS_PACKAGE, STRATEGIES_PACKAGE, folder_or_bundled
from .corpus.importers import import_rustlings, import_seed_json
from .corpus.proofs import PROOFS_FILE, ProofLedger, rustc_release
from .corpus.statistics import render_statistics, suite_statistics
from .progress import ProgressReport
from .corpus.suites import SUITES_FILE, frozen_table, load_suites, select_suite
from .koans import CorpusError, Koan, KoanFileError, load_corpus, load_families, load_koan
from .verify.sandbox import Sandbox, SandboxUnavailable, Toolchain, ToolchainMissing
from .corpus.validation import MIN_MUTATION_SCORE, KoanCheck, check_corpus
from .models import load_model
from .models.cache import rekey
from .settings import completion_cache_dir, default_cache_dir, verdict_cache_dir
from .extensions import command_line_extensions
from .strategies import StrategyError, known_strategies, select_strategies
from .training.artifacts import ArtifactStore, default_artifacts_dir
from .training.datasets import make_dpo, make_sft, make_variants
from .training.leakage import LeakageGuard, audit, render_audit
from .training.records import RecordFileError, read_records
from .results.report import RunReport, build_report, render, report_dict
from .results.view import render_view, write_view
from .rescore import rescore_run
from .results import EpisodeFileError, RunFile, RunFileError, read_episodes, read_run_file, write_run_file
from .verify.verifier import MAX_CANDIDATE_BYTES, VerificationCache, Verifier

__all__ = ["main"]


class UsageError(Exception):
    """Bad input from the user; the message says what to do."""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    # Unnamed folders: ./koans and ./strategies, else those installed with the package.
    if "koans" in vars(args):
        args.koans = folder_or_bundled(Path("koans"), KOANS_PACKAGE, named=False) if args.koans is None else args.koans
    if "strategies" in vars(args):
        args.strategies = (folder_or_bundled(Path("strategies"), STRATEGIES_PACKAGE, named=False)
                           if args.strategies is None else args.strategies)
    try:
        return args.run(args)
    except (UsageError, CorpusError, KoanFileError, SandboxUnavailable, ToolchainMissing, StrategyError,
            RunFileError, EpisodeFileError, RecordFileError, ValueError) as error:
        print(f"sleepy: error: {error}", file=sys.stderr)
        return 2


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sleepy", description="pytest-sleepy: koans, verification and reports")
    commands = parser.add_subparsers(title="commands")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--koans", type=Path, default=None, metavar="DIR",
                        help="koan corpus (default: ./koans, or the koans installed with pytest-sleepy when there is none)")
    common.add_argument("--no-cache", action="store_true", help="bypass the verification cache")
    common.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="verification cache (default: $SLEEPY_CACHE_DIR or ./.sleepy/cache)")
    common.add_argument("--unsafe-no-sandbox", action="store_true",
                        help="run rustc and tests without bubblewrap (model-written code runs with your rights)")
    common.add_argument("--max-candidate-kib", type=_positive_int, default=MAX_CANDIDATE_BYTES // 1024, metavar="N",
                        help="refuse candidates larger than N KiB before any work (default: %(default)s)")

    koans = commands.add_parser("koans", help="list, show, check, validate and import koans")
    koan_commands = koans.add_subparsers(title="koan commands")

    listing = koan_commands.add_parser("list", parents=[common], help="list koans")
    listing.add_argument("--split", choices=["eval", "train"])
    listing.add_argument("--suite", help="only the koans of this eval suite (see the suites table)")
    listing.add_argument("--family")
    listing.add_argument("--pattern")
    listing.set_defaults(run=_list)

    freeze = koan_commands.add_parser("freeze", parents=[common],
                                      help="append a suite of every eval koan as it stands to suites.toml")
    freeze.add_argument("name", help="the new suite's name, e.g. eval-v2")
    freeze.add_argument("--description", default="", help="one line on what the suite holds")
    freeze.set_defaults(run=_freeze)

    stats = koan_commands.add_parser("stats", parents=[common],
                                     help="a suite's koans per family, error code and difficulty, its multi-error "
                                          "share, recorded mutation scores and rustfix share")
    stats.add_argument("--suite", help="the eval suite (default: the newest; `draft` for every eval koan)")
    stats.add_argument("--rustfix", type=Path, metavar="RUN.json",
                       help="a run file of the rustfix model on this suite, for the share it repairs")
    stats.set_defaults(run=_stats)

    show = koan_commands.add_parser("show", parents=[common], help="print one koan")
    show.add_argument("id")
    show.set_defaults(run=_show)

    check = koan_commands.add_parser("check", parents=[common], help="verify a candidate file against a koan")
    check.add_argument("id")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    check.set_defaults(run=_check)

    validate = koan_commands.add_parser(
        "validate", parents=[common],
        help="prove every koan: buggy fails as declared, fixed passes, stubs fail the tests")
    validate.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="koan files or folders (default: the corpus)")
    validate.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2,
                          help="koans (and each koan's mutants) checked at once")
    validate.add_argument("--mutants", action="store_true",
                          help="also score the hidden tests on mutants of each fix (eval koans need 90%%)")
    validate.add_argument("--record", action="store_true",
                          help="keep the proofs of the koans that are ok in the corpus's proofs.json, so the "
                               "test suite proves again only what changed (needs --mutants)")
    validate.set_defaults(run=_validate)

    importer = koan_commands.add_parser("import", parents=[common], help="import koans from another format")
    importer.add_argument("--format", required=True, choices=["seed-json", "rustlings"])
    importer.add_argument("source", type=Path, help="seed JSON file, or rustlings checkout")
    importer.add_argument("--out", type=Path, required=True, metavar="DIR", help="where to write koan files")
    importer.add_argument("--split", choices=["eval", "train"], default=None,
                          help="split of the imported koans (default: eval for seed-json, train for rustlings)")
    importer.set_defaults(run=_import)

    strategies = commands.add_parser("strategies", help="list the strategies --strategy can name")
    strategies.add_argument("--strategies", type=Path, default=None, metavar="DIR",
                            help="folder of strategy files (default: ./strategies, or those installed with "
                                 "pytest-sleepy when there is none)")
    strategies.set_defaults(run=_strategies)

    report = commands.add_parser("report", help="reprint a run's summary and forgetting matrix from its run file")
    report.add_argument("run_file", type=Path, metavar="RUN.json")
    report.add_argument("--vs", type=Path, metavar="BASE.json", help="compare with this baseline run file")
    report.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    report.add_argument("--matrix", choices=["full", "changed", "off"], default="changed",
                        help="forgetting-matrix rows (default: changed)")
    report.add_argument("--heatmap", type=Path, metavar="OUT.png",
                        help="also draw the forgetting matrix as an image (needs pytest-sleepy[plots])")
    report.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    report.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the report here instead of stdout")
    report.set_defaults(run=_report)

    view = commands.add_parser("view", help="write a run as one self-contained HTML file: summary, forgetting "
                                            "matrix, and every koan's attempts, with filters")
    view.add_argument("run_file", type=Path, metavar="RUN.json")
    view.add_argument("--vs", type=Path, metavar="BASE.json", help="compare with this baseline run file")
    view.add_argument("--episodes", type=Path, metavar="EP.jsonl",
                      help="the run's episodes (--sleepy-episodes): each koan's page then shows its attempts")
    view.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    view.add_argument("-o", "--output", type=Path, required=True, metavar="report.html")
    view.set_defaults(run=_view)

    rescore = commands.add_parser("rescore", parents=[common],
                                  help="re-verify a run's stored candidates under the current verifier (no model)")
    rescore.add_argument("run_file", type=Path, metavar="RUN.json")
    rescore.add_argument("--episodes", type=Path, required=True, metavar="EP.jsonl",
                         help="the run's episodes (--sleepy-episodes)")
    rescore.add_argument("-o", "--output", type=Path, metavar="OUT.json",
                         help="the rescored run file (default: RUN.rescored.json next to RUN.json)")
    rescore.set_defaults(run=_rescore)

    leaks = argparse.ArgumentParser(add_help=False)
    leaks.add_argument("--i-know-this-leaks", action="store_true",
                       help="allow eval koans as training material (the records are marked leaks=true)")

    variants = commands.add_parser("variants", parents=[common, leaks],
                                   help="derive verified koan variants (training material) with hypothesis")
    variants.add_argument("--split", choices=["train", "eval", "all"], default="train")
    variants.add_argument("--per-koan", type=int, default=20, metavar="N", help="variants kept per koan (default 20)")
    variants.add_argument("--seed", type=int, default=0, metavar="S")
    variants.add_argument("--koan", action="append", metavar="ID", help="only these koans (repeatable)")
    variants.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2, help="koans drawn at once")
    variants.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.jsonl")
    variants.set_defaults(run=_variants)

    data = commands.add_parser("data", help="training records: sft, dpo, audit")
    data_commands = data.add_subparsers(title="data commands")
    sft = data_commands.add_parser("sft", parents=[common, leaks], help="SFT records from a variants file")
    sft.add_argument("variants_file", type=Path, metavar="VARIANTS.jsonl")
    sft.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.jsonl")
    sft.add_argument("--strategy", default="baseline", help="whose prompt builder to use (default baseline)")
    sft.add_argument("--strategies", type=Path, default=None, metavar="DIR",
                     help="folder of strategy files (default: as for `sleepy strategies`)")
    sft.add_argument("--run", dest="weights_run", type=Path, metavar="RUN.json",
                     help="weight records by how this run's model did on each source koan")
    sft.set_defaults(run=_data_sft)
    dpo = data_commands.add_parser("dpo", parents=[common, leaks], help="preference records from episodes")
    dpo.add_argument("episodes_file", type=Path, metavar="EPISODES.jsonl")
    dpo.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.jsonl")
    dpo.set_defaults(run=_data_dpo)
    audit = data_commands.add_parser("audit", parents=[common], help="leakage and pattern coverage of a record file")
    audit.add_argument("records_file", type=Path, metavar="FILE.jsonl")
    audit.add_argument("--format", choices=["text", "markdown"], default="text")
    audit.set_defaults(run=_data_audit)

    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--artifacts", type=Path, default=None, metavar="DIR",
                       help="artifact store (default: $SLEEPY_ARTIFACTS_DIR or ./.sleepy/artifacts)")
    adapters = commands.add_parser("adapters",
                                   help="trained adapters in the artifact store: list, show, delete, export")
    adapter_commands = adapters.add_subparsers(title="adapter commands")
    adapters_list = adapter_commands.add_parser("list", parents=[store], help="list the stored artifacts")
    adapters_list.add_argument("--kind", help="only artifacts of this kind (e.g. lora)")
    adapters_list.set_defaults(run=_adapters_list)
    adapters_show = adapter_commands.add_parser("show", parents=[store], help="print an artifact's artifact.json")
    adapters_show.add_argument("key", metavar="KEY", help="the key, or its start")
    adapters_show.set_defaults(run=_adapters_show)
    adapters_delete = adapter_commands.add_parser("delete", parents=[store], help="remove an artifact")
    adapters_delete.add_argument("key", metavar="KEY", help="the key, or its start")
    adapters_delete.set_defaults(run=_adapters_delete)
    adapters_export = adapter_commands.add_parser(
        "export", parents=[store], help="copy a peft adapter out of the store, with an Ollama Modelfile")
    adapters_export.add_argument("key", metavar="KEY", help="the key, or its start")
    adapters_export.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                                 help="where to write DIR/adapter/ and DIR/Modelfile")
    adapters_export.add_argument("--name", help="the Ollama model name to suggest (default: sleepy-KEY12)")
    adapters_export.add_argument("--force", action="store_true", help="replace an earlier export in DIR")
    adapters_export.set_defaults(run=_adapters_export)

    cache = commands.add_parser("cache", help="the completion cache: rekey")
    cache_commands = cache.add_subparsers(title="cache commands")
    rekey_command = cache_commands.add_parser(
        "rekey", help="move recorded answers to today's cache keys (after an upgrade changed them)")
    rekey_command.add_argument("directory", type=Path, nargs="?", default=None, metavar="DIR",
                               help="the folder --sleepy-cache-dir names (default: $SLEEPY_CACHE_DIR or ./.sleepy/cache)")
    rekey_command.set_defaults(run=_cache_rekey)

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--feedback-dir", type=Path, default=None, metavar="DIR",
                       help="the feedback directory (default: [tool.sleepy.feedback] dir, or ./.sleepy/feedback)")
    feedback = commands.add_parser("feedback", help="mark model answers and train a feedback adapter from them")
    feedback_commands = feedback.add_subparsers(title="feedback commands")
    feedback_list = feedback_commands.add_parser("list", help="failed (and slow) attempts of an episode file, "
                                                 "with the ids `feedback add` takes")
    feedback_list.add_argument("episodes_file", type=Path, metavar="EPISODES.jsonl")
    feedback_list.add_argument("--slow", type=float, default=None, metavar="SECONDS",
                               help="also list attempts whose model took longer than this")
    feedback_list.set_defaults(run=_feedback_list)
    feedback_add = feedback_commands.add_parser("add", parents=[common, where],
                                                help="record a correction of one episode, weighted")
    feedback_add.add_argument("episode", metavar="EPISODE_ID", help="an id from `sleepy feedback list` (or its start)")
    feedback_add.add_argument("--episodes", type=Path, required=True, metavar="EPISODES.jsonl")
    weight = feedback_add.add_mutually_exclusive_group(required=True)
    for name in ("critical", "medium", "good"):
        weight.add_argument(f"--{name}", dest="weight_class", action="store_const", const=name,
                            help=f"weight class {name}")
    feedback_add.add_argument("--note", default="", metavar="TEXT", help="why (kept in the record)")
    feedback_add.add_argument("--fix", type=Path, metavar="FILE",
                              help="your fix (verified in the sandbox first); default: the koan's reference fix")
    feedback_add.add_argument("--allow-eval", action="store_true",
                              help="allow eval koans (the record is marked leaks=true)")
    feedback_add.add_argument("--no-train", action="store_true", help="only record; never start a training")
    feedback_add.set_defaults(run=_feedback_add)
    feedback_status = feedback_commands.add_parser("status", parents=[where],
                                                   help="the buffer and the last training")
    feedback_status.set_defaults(run=_feedback_status)
    feedback_train = feedback_commands.add_parser("train", parents=[where],
                                                  help="start a training on the buffer now, in the background")
    feedback_train.set_defaults(run=_feedback_train)
    return parser


def _verifier(args) -> Verifier:
    cache = None if args.no_cache else VerificationCache(verdict_cache_dir(args.cache_dir or default_cache_dir()))
    return Verifier(Sandbox(Toolchain.detect(), unsafe_no_sandbox=args.unsafe_no_sandbox), cache,
                    max_candidate_bytes=args.max_candidate_kib * 1024)


def _find(args, koan_id: str) -> Koan:
    koans = {k.id: k for k in load_corpus(args.koans)}
    if koan_id not in koans:
        raise UsageError(f"no koan with id {koan_id!r} in {args.koans} (see `sleepy koans list`)")
    return koans[koan_id]


def _list(args) -> int:
    corpus = load_corpus(args.koans)
    suites = load_suites(args.koans, corpus)
    members = None
    if args.suite is not None:
        members = select_suite(args.koans, corpus, args.suite).koans
    koans = [
        k for k in corpus
        if (args.split is None or k.split == args.split)
        and (members is None or k.id in members)
        and (args.family is None or k.family == args.family)
        and (args.pattern is None or k.pattern == args.pattern)
    ]
    rows = [(k.id, k.split, k.family, k.pattern, " ".join(k.expect), k.difficulty or "-", k.title) for k in koans]
    print(tabulate(rows, headers=["id", "split", "family", "pattern", "expect", "difficulty", "title"]))
    print(f"\n{len(koans)} koans\n")
    suite_rows = []
    for suite in suites:
        problems = suite.problems(corpus)
        families = Counter(k.family for k in suite.members(corpus))
        suite_rows.append((suite.name + (" (default)" if suite is suites[-1] else ""), len(suite.koans), suite.digest,
                           len(families), "ok" if not problems else f"{len(problems)} problem(s): {problems[0]}"))
    print(tabulate(suite_rows, headers=["suite", "koans", "digest", "families", "frozen koans"]))
    unfrozen = [k.id for k in corpus if k.split == "eval" and not any(k.id in s.koans for s in suites)]
    if unfrozen:
        print(f"\n{len(unfrozen)} eval koan(s) in no suite yet (not collected): {', '.join(unfrozen[:8])}"
              + (", ..." if len(unfrozen) > 8 else ""))
    return 0


def _freeze(args) -> int:
    corpus = load_corpus(args.koans)
    path = args.koans / SUITES_FILE
    existing = load_suites(args.koans, corpus) if path.is_file() else []
    if any(s.name == args.name for s in existing):
        raise UsageError(f"{path} already has a suite {args.name!r}; a frozen suite never changes: pick a new name")
    table = frozen_table(args.name, args.description, corpus)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(("\n" if existing else "") + table)
    frozen = load_suites(args.koans, corpus)[-1]
    print(f"froze {frozen.name}: {len(frozen.koans)} eval koans, digest {frozen.digest}, in {path}")
    return 0


def _stats(args) -> int:
    corpus = load_corpus(args.koans)
    suite = select_suite(args.koans, corpus, args.suite)
    rustc = rustc_release(Toolchain.detect().version)
    ledger = ProofLedger.read(args.koans / PROOFS_FILE, rustc)
    rustfix = read_run_file(args.rustfix) if args.rustfix else None
    try:
        stats = suite_statistics(suite, suite.members(corpus), ledger, rustc, rustfix, args.rustfix)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(render_statistics(stats), end="")
    return 0


def _known_strategies(args) -> dict:
    """The strategies folder's, and those installed packages add (hookspec.py)."""
    return known_strategies(args.strategies, command_line_extensions().strategies)


def _strategies(args) -> int:
    found = _known_strategies(args)
    rows = [(s.name, s.max_steps or "--max-steps", s.description) for s in found.values()]
    print(tabulate(rows, headers=["strategy", "steps", "description"]))
    return 0


def _strategy_order(run: RunFile) -> list[str]:
    names = [s["name"] for s in run.provenance.get("strategies", []) if isinstance(s, dict) and "name" in s]
    return names or sorted({o.strategy for o in run.outcomes})


def _saved_report(args) -> tuple[RunFile, RunFile | None, RunReport]:
    """The run file, its baseline (--vs) and the report of the two, for report and view."""
    run = read_run_file(args.run_file)
    baseline = read_run_file(args.vs) if args.vs else None
    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha={args.alpha}: must lie strictly between 0 and 1")
    if baseline is not None and (mismatch := suite_mismatch(baseline.provenance, run.provenance.get("suite"),
                                                            current=str(args.run_file))):
        raise UsageError(f"--vs {args.vs} {mismatch}")
    report = build_report(run.outcomes, run.provenance, strategies=_strategy_order(run),
                          model=run.provenance.get("model", {}).get("spec", ""), baseline=baseline, alpha=args.alpha)
    return run, baseline, report


def _view(args) -> int:
    run, baseline, report = _saved_report(args)
    episodes = read_episodes(args.episodes) if args.episodes else []
    if episodes and not any(e.get("run_id") == run.run_id for e in episodes):
        raise UsageError(f"--episodes {args.episodes}: no episode of run {run.run_id} in it; pass the file that "
                         "run wrote with --sleepy-episodes")
    write_view(args.output, render_view(report, run.outcomes, run_id=run.run_id, episodes=episodes,
                                        baseline_id=baseline.run_id if baseline else ""))
    print(f"html view: {args.output}")
    return 0


def _report(args) -> int:
    run, baseline, report = _saved_report(args)
    if args.format == "json":
        text = json.dumps(report_dict(report), indent=1)
    else:
        title = f"run {run.run_id}" + (f" against {baseline.run_id}" if baseline else "")
        body = render(report, args.format, args.matrix)
        text = f"## pytest-sleepy: {title}\n\n{body}" if args.format == "markdown" else f"{title}\n\n{body}"
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    if args.heatmap:
        from .results.heatmap import PlotsUnavailable, draw_heatmap

        try:
            draw_heatmap(report.matrix, args.heatmap, title=f"forgetting matrix: {title}",
                         rows="full" if args.matrix == "off" else args.matrix)
        except PlotsUnavailable as error:
            raise UsageError(str(error)) from None
        print(f"heatmap: {args.heatmap}", file=sys.stderr)
    return 0


def _rescore(args) -> int:
    run = read_run_file(args.run_file)
    episodes = read_episodes(args.episodes)
    koans = {k.id: k for k in load_corpus(args.koans)}
    result = rescore_run(run, episodes, koans, _verifier(args))
    output = args.output or args.run_file.with_name(args.run_file.stem + ".rescored.json")
    write_run_file(output, result.run)
    rows = [(f"{c.koan}[{c.strategy}]", c.sample, f"{c.before_status}: {c.before_reason or 'solved'}",
             f"{c.after_status}: {c.after_reason or 'solved'}") for c in result.changed]
    print(f"rescored {result.rescored} outcome(s) of run {run.run_id}; {len(result.changed)} changed")
    if rows:
        print(tabulate(rows, headers=["item", "sample", "before", "after"]))
    for label, why in result.skipped:
        print(f"{label}: {why}")
    print(f"run file: {output}")
    return 0


def _split(koans: list[Koan], split: str) -> list[Koan]:
    return [k for k in koans if split in ("all", k.split) and not k.flagged]


def _variants(args) -> int:
    corpus = load_corpus(args.koans)
    if args.split != "train" and not args.i_know_this_leaks:
        raise UsageError(f"--split {args.split}: variants of eval koans would leak the benchmark into training "
                         "data; use --split train, or add --i-know-this-leaks (the records are then marked leaks=true)")
    if args.per_koan < 1:
        raise UsageError(f"--per-koan={args.per_koan}: must be at least 1")
    koans = _split(corpus, args.split)
    if args.koan:
        unknown = sorted(set(args.koan) - {k.id for k in koans})
        if unknown:
            raise UsageError(f"--koan: {', '.join(unknown)} not in the {args.split} split of {args.koans}")
        koans = [k for k in koans if k.id in args.koan]
    cache = None if args.no_cache else verdict_cache_dir(args.cache_dir or default_cache_dir())
    started = time.perf_counter()

    with ProgressReport(len(koans), "variants", unit="koan") as report:
        def progress(draw) -> None:
            report.step(f"{draw.koan}: drew {draw.drawn}, kept {draw.kept}, duplicates {draw.duplicates}, "
                        f"discarded {draw.discarded}, refused {draw.refused} ({draw.seconds:.1f} s)")

        result = make_variants(koans, _split(corpus, "eval"), args.output, per_koan=args.per_koan, seed=args.seed,
                               leaks=args.split != "train", jobs=args.jobs, cache_dir=cache,
                               unsafe_no_sandbox=args.unsafe_no_sandbox, progress=progress)
    rows = [(d.koan, d.drawn, d.kept, d.duplicates, d.discarded, d.refused,
             ", ".join(f"{p} x{n}" for p, n in d.problems.most_common(2))) for d in result.draws]
    totals = [sum(r[i] for r in rows) for i in range(1, 6)]
    print(tabulate([*rows, ("total", *totals, "")],
                   headers=["koan", "drawn", "kept", "duplicates", "discarded", "refused (leakage)", "main problems"]))
    for refusal in result.refusals:
        print(f"refused: {refusal}")
    print(f"\n{result.written} variants of {len(koans)} koans written to {args.output} "
          f"in {time.perf_counter() - started:.0f} s")
    return 0


def _guard(args) -> LeakageGuard:
    return LeakageGuard(_split(load_corpus(args.koans), "eval"))


def _data_sft(args) -> int:
    strategy = select_strategies(_known_strategies(args), [args.strategy])[0]
    corpus = load_corpus(args.koans)
    verifier = _verifier(args)
    strategy.prepare(_split(corpus, "train"), verifier.verify_candidate)
    variants = read_records(args.variants_file, kinds=("variant",))
    outcomes = read_run_file(args.weights_run).outcomes if args.weights_run else []
    result = make_sft(variants, strategy, verifier, _guard(args), args.output, outcomes=outcomes,
                      allow_leaks=args.i_know_this_leaks)
    return _report_data(result, args.output)


def _data_dpo(args) -> int:
    episodes = read_episodes(args.episodes_file)
    koans = {k.id: k for k in load_corpus(args.koans)}
    result = make_dpo(episodes, koans, _guard(args), args.output, allow_leaks=args.i_know_this_leaks)
    return _report_data(result, args.output)


def _report_data(result, output: Path) -> int:
    for line in result.skipped:
        print(f"skipped: {line}")
    for line in result.refusals:
        print(f"refused: {line}")
    classes = ", ".join(f"{n} {c}" for c, n in sorted(result.weight_classes.items())) or "none"
    print(f"{result.written} records written to {output} (weight classes: {classes}); "
          f"{len(result.refusals)} refused, {len(result.skipped)} skipped")
    return 1 if result.refusals else 0


def _data_audit(args) -> int:
    eval_koans = _split(load_corpus(args.koans), "eval")
    guard = LeakageGuard(eval_koans)
    records = read_records(args.records_file)
    report = audit(records, guard, eval_koans)
    print(render_audit(report, args.format))
    return 1 if report.over_threshold else 0


def _show(args) -> int:
    koan = _find(args, args.id)
    print(f"{koan.id}: {koan.title}")
    print(f"family {koan.family}, pattern {koan.pattern}, split {koan.split}, edition {koan.edition}, "
          f"expect {', '.join(koan.expect)}")
    print(f"file {koan.path}")
    if koan.hint:
        print(f"hint: {koan.hint}")
    for name in ("buggy", "fixed", "tests"):
        print(f"\n--- {name} ---\n{getattr(koan, name).strip()}")
    return 0


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot read the {what} {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise UsageError(f"the {what} {path} is not UTF-8 (byte {error.start}); save it as UTF-8") from None


def _check(args) -> int:
    koan = _find(args, args.id)
    code = _read_text(args.file, "candidate file")
    verdict = _verifier(args).verify_candidate(koan, code)
    if args.json:
        data = {"koan": koan.id, **verdict.to_dict()}
        print(json.dumps(data, indent=2))
    else:
        status = "PASSED" if verdict.passed else "FAILED"
        print(f"{koan.id}: {status}{'' if verdict.passed else ' - ' + verdict.reason}")
        print(f"compiled: {'yes' if verdict.compiled else 'no'}; error codes: {', '.join(verdict.error_codes) or 'none'}; "
              f"hidden tests: {verdict.tests_passed} passed, {verdict.tests_failed} failed of {verdict.tests_total}; "
              f"compile {verdict.compile_seconds:.2f} s, run {verdict.run_seconds:.2f} s{' (cached)' if verdict.cached else ''}")
        for diagnostic in verdict.diagnostics:
            if diagnostic.is_error and not diagnostic.in_hidden_tests:
                print("\n" + diagnostic.rendered.rstrip())
    return 0 if verdict.passed else 1


def _validate(args) -> int:
    if args.paths:
        families = load_families(args.koans) if args.koans.is_dir() else None
        koans = []
        for path in args.paths:
            if path.is_dir():
                koans.extend(load_corpus(path))
            else:
                koans.append(load_koan(path, families))
    else:
        koans = load_corpus(args.koans)
    if args.record and not args.mutants:
        raise UsageError("--record keeps full proofs only: add --mutants")
    verifier = _verifier(args)
    with ProgressReport(len(koans), "validate" + (" --mutants" if args.mutants else ""), unit="koan") as report:
        checks = check_corpus(koans, verifier, jobs=args.jobs, mutants=args.mutants,
                              progress=lambda check: report.step(f"{check.koan.id}: {'ok' if check.ok else 'BAD'}"))
    print(tabulate([_check_row(c, args.mutants) for c in checks],
                   headers=["koan", "split", "family", "pattern", "buggy", "fixed", "alternatives", "decoys",
                            *(["mutants killed"] if args.mutants else []), "status"]))
    if args.mutants:
        _print_mutation_summary(checks)
    bad = [c for c in checks if not c.ok]
    for check in bad:
        print(f"\n{check.koan.id} ({check.koan.path}):")
        for problem in check.problems:
            print(f"  - {problem}")
    if args.record:
        rustc = rustc_release(verifier.toolchain.version)
        ledger = ProofLedger.read(args.koans / PROOFS_FILE, rustc)
        ledger.record(checks, rustc)
        if not args.paths:
            ledger.keep_only({k.id for k in koans})
        ledger.write()
        print(f"recorded {len(checks) - len(bad)} proof(s) in {ledger.path} ({len(ledger.proofs)} in all)")
    splits = Counter(k.split for k in koans)
    patterns = len({k.pattern for k in koans})
    print(f"\n{len(koans)} koans ({', '.join(f'{n} {s}' for s, n in sorted(splits.items()))}; {patterns} patterns): "
          f"{len(koans) - len(bad)} ok, {len(bad)} bad")
    return 1 if bad else 0


def _print_mutation_summary(checks: list[KoanCheck]) -> None:
    for split in ("eval", "train"):
        scores = sorted(c.mutation.score for c in checks
                        if c.koan.split == split and c.mutation and c.mutation.score is not None)
        if scores:
            passing = sum(s >= MIN_MUTATION_SCORE for s in scores)
            print(f"\nmutation scores, {split}: {len(scores)} koans, min {scores[0]:.0%}, "
                  f"median {scores[len(scores) // 2]:.0%}, max {scores[-1]:.0%}; "
                  f"{passing} at or above {MIN_MUTATION_SCORE:.0%}")
    for check in checks:
        if check.mutation and check.mutation.survived:
            print(f"\n{check.koan.id}: surviving mutants")
            for mutant in check.mutation.survived:
                print(f"  {mutant.id}  ({mutant.description})")


def _check_row(check: KoanCheck, mutants: bool = False) -> tuple:
    koan, buggy, fixed = check.koan, check.buggy, check.fixed
    if buggy is None:
        buggy_text = "-"
    elif buggy.compiled:
        buggy_text = f"tests {buggy.tests_passed}/{buggy.tests_total}"
    else:
        buggy_text = " ".join(buggy.error_codes) or buggy.reason[:30]
    fixed_text = "-" if fixed is None else f"tests {fixed.tests_passed}/{fixed.tests_total}"
    alternatives = f"{check.alternatives_passed}/{len(koan.alternatives)} pass" if koan.alternatives else "-"
    decoys = f"{check.decoys_failed}/{len(koan.decoys)} fail" if koan.decoys else "-"
    score = check.mutation
    mutation = [] if not mutants else [
        "-" if score is None or score.score is None else
        f"{score.killed}/{score.viable} ({score.score:.0%})" + (f", {score.equivalent} equiv." if score.equivalent else "")]
    return (koan.id, koan.split, koan.family, koan.pattern, buggy_text, fixed_text, alternatives, decoys,
            *mutation, "ok" if check.ok else "BAD")


def _import(args) -> int:
    verifier = _verifier(args)
    if args.format == "seed-json":
        report = import_seed_json(args.source, args.out, verifier, split=args.split or "eval")
    else:
        report = import_rustlings(args.source, args.out, verifier, split=args.split or "train")
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {len(report.written)} koan file(s) to {args.out}; run `sleepy koans validate --koans {args.out}` next")
    return 0


# -- sleepy adapters ------------------------------------------------------------------

def _store(args) -> ArtifactStore:
    return ArtifactStore(args.artifacts or default_artifacts_dir())


def _size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _cache_rekey(args) -> int:
    named = args.directory or default_cache_dir()
    folder = named if named.name == "completions" else completion_cache_dir(named)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no recorded answers there; name the folder --sleepy-cache-dir names")
    added = command_line_extensions().backends
    moved, right, kept = rekey(folder, load=lambda spec: load_model(spec, added))
    print(f"{folder}: {moved} answers moved to today's keys, {right} already there"
          + (f", {kept} left where they were (the same model's answer to the same request is already there)"
             if kept else ""))
    return 0


def _adapters_list(args) -> int:
    store = _store(args)
    artifacts = [a for a in store.list() if args.kind is None or a.kind == args.kind]
    if not artifacts:
        print(f"no artifacts{f' of kind {args.kind}' if args.kind else ''} in {store.root}")
        return 0
    rows = [(a.key[:12], a.kind, a.made_by or "-", a.base_name or "-", a.created, _size(a.size)) for a in artifacts]
    print(tabulate(rows, headers=["key", "kind", "made by", "base model", "created", "size"]))
    print(f"\n{len(artifacts)} artifact(s) in {store.root}")
    return 0


def _adapters_show(args) -> int:
    print(json.dumps(_store(args).get(args.key).meta, indent=2, ensure_ascii=False))
    return 0


def _adapters_delete(args) -> int:
    artifact = _store(args).delete(args.key)
    print(f"deleted {artifact.kind} artifact {artifact.key} ({artifact.path})")
    return 0


# The files of a peft adapter; the store's own files (artifact.json, train_log.json,
# loss.png) stay behind, so Ollama reads nothing else from the adapter folder.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _adapters_export(args) -> int:
    artifact = _store(args).get(args.key)
    if not (artifact.path / "adapter_config.json").is_file():
        raise UsageError(f"artifact {artifact.key[:12]} ({artifact.kind}) holds no adapter_config.json: "
                         "it is not a peft adapter, so there is nothing to export")
    weights = [n for n in ADAPTER_FILES[1:] if (artifact.path / n).is_file()]
    if not weights:
        raise UsageError(f"artifact {artifact.key[:12]} has adapter_config.json but no adapter weights "
                         f"({' or '.join(ADAPTER_FILES[1:])})")
    out = args.output.resolve()
    adapter, modelfile = out / "adapter", out / "Modelfile"
    if (adapter.exists() or modelfile.exists()) and not args.force:
        raise UsageError(f"{out} already holds an export (adapter/ or Modelfile); choose another -o or add --force")
    name = args.name or f"sleepy-{artifact.key[:12]}"
    if adapter.exists():
        shutil.rmtree(adapter)
    adapter.mkdir(parents=True)
    for file_name in ("adapter_config.json", *weights):
        shutil.copy2(artifact.path / file_name, adapter / file_name)
    (out / "artifact.json").write_text(json.dumps(artifact.meta, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    base = artifact.base_name
    modelfile.write_text(f"# LoRA adapter {artifact.key} ({artifact.kind}, made by {artifact.made_by or '-'})\n"
                         f"FROM {base}\nADAPTER {adapter}\n", encoding="utf-8")
    print(f"exported {artifact.kind} adapter {artifact.key[:12]} to {adapter}")
    print(f"Modelfile: {modelfile}")
    print(f"\nnote: FROM is {base!r}, the base the adapter was trained on. Ollama needs a base model name it "
          "knows (or a local weights directory): if that is a Hugging Face name, edit FROM to the Ollama name of "
          "the same weights (e.g. qwen2.5-coder:1.5b-instruct). The adapter only fits exactly that base.")
    print(f"\nollama create {shlex.quote(name)} -f {shlex.quote(str(modelfile))}\nollama run {shlex.quote(name)}")
    return 0


# -- sleepy feedback ------------------------------------------------------------------

def _feedback_config(args):
    """[tool.sleepy.feedback] of ./pyproject.toml (when there is one), with --feedback-dir."""
    from .feedback import FeedbackConfig
    from .settings import read_tool_table

    pyproject = Path("pyproject.toml")
    table = read_tool_table(pyproject)
    section = table.get("feedback", {})
    artifacts = table.get("artifacts-dir")
    config = FeedbackConfig.from_table(section, f"{pyproject}: [tool.sleepy.feedback]", base_dir=Path("."),
                                       default_model=table.get("model"),
                                       artifacts_dir=Path(artifacts) if isinstance(artifacts, str) else None)
    if getattr(args, "feedback_dir", None) is not None:
        from dataclasses import replace

        config = replace(config, dir=args.feedback_dir)
    return config


def _feedback_list(args) -> int:
    from .feedback import list_episodes

    if args.slow is not None and args.slow < 0:
        raise UsageError(f"--slow={args.slow}: must be a number of seconds, at least 0")
    listed = list_episodes(read_episodes(args.episodes_file), slow_seconds=args.slow)
    if not listed:
        print(f"no failed{' or slow' if args.slow is not None else ''} attempts in {args.episodes_file}")
        return 0
    rows = [(item.id, item.episode.get("koan"), item.episode.get("strategy"), item.episode.get("step"),
             ("" if item.failed else "slow: ") + item.reason[:70],
             f"{float(item.episode.get('model_seconds') or 0):.2f}") for item in listed]
    print(tabulate(rows, headers=["id", "koan", "strategy", "step", "verdict / model error", "model s"],
                   disable_numparse=True))
    failed = sum(1 for item in listed if item.failed)
    print(f"\n{failed} failed, {sum(1 for item in listed if item.slow)} slow; mark one with "
          f"`sleepy feedback add ID --episodes {args.episodes_file} --critical|--medium|--good`")
    return 0


def _feedback_add(args) -> int:
    from .feedback import FeedbackBuffer, add_feedback, correction_record, find_episode

    config = _feedback_config(args)
    episode = find_episode(read_episodes(args.episodes), args.episode)
    corpus = load_corpus(args.koans)
    koan = next((k for k in corpus if k.id == episode.get("koan")), None)
    if koan is None:
        raise UsageError(f"episode {args.episode}: koan {episode.get('koan')!r} is not in {args.koans} (pass --koans DIR)")
    fix = None
    if args.fix is not None:
        fix = _read_text(args.fix, "fix")
    record = correction_record(episode, koan, weight_class=args.weight_class, fix_code=fix, note=args.note,
                               verifier=_verifier(args) if fix is not None else None,
                               guard=LeakageGuard(_split(corpus, "eval")), allow_eval=args.allow_eval,
                               weights=config.weights)
    buffer = FeedbackBuffer(config.dir, config.buffer_size)
    result = add_feedback(buffer, record, config, start=not args.no_train)
    meta = record["metadata"]
    print(f"recorded feedback on episode {meta['episode']} ({koan.id}, {meta['weight_class']} {meta['weight']:g}x, "
          f"{meta['fix']} fix{', LEAKS' if meta['leaks'] else ''}) in {config.dir}")
    print(f"buffer {result.size}/{result.capacity}; {result.pending} pending of threshold {config.threshold}")
    if result.started:
        print(f"training started in the background (pid {result.pid}); see `sleepy feedback status`")
    elif result.crossed:
        print(f"no training started: {result.why_not}")
    return 0


def _feedback_status(args) -> int:
    from .feedback import FeedbackBuffer, latest_adapter, training_state

    config = _feedback_config(args)
    status = FeedbackBuffer(config.dir, config.buffer_size).status()
    classes = ", ".join(f"{status.classes.get(c, 0)} {c}" for c in config.weights)
    print(f"feedback in {config.dir}")
    print(f"buffer: {status.size}/{status.capacity} records ({classes}; total weight {status.weight:g}), "
          f"{status.total} added in all")
    print(f"pending: {status.pending} of threshold {config.threshold}")
    state = training_state(config.dir)
    if state is None:
        print("training: none yet")
    else:
        line = f"training {state.get('run')}: {state.get('status')}"
        if state.get("pid"):
            line += f" (pid {state['pid']})"
        line += f", started {state.get('started')}, {state.get('records')} records"
        print(line)
        if state.get("status") in ("running", "done") and state.get("step"):
            loss = state.get("loss")
            eta = state.get("eta_seconds")
            print(f"  step {state['step']}/{state.get('steps')}"
                  + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
                  + (f", ETA {eta:.0f} s" if isinstance(eta, (int, float)) and state.get("status") == "running" else ""))
        if state.get("status") == "done" and state.get("adapter"):
            adapter = state["adapter"]
            print(f"  adapter {adapter['identity']} at {adapter['path']} (finished {state.get('finished')})")
        if state.get("status") == "failed":
            print(f"  error: {state.get('error')}")
        print(f"  log: {state.get('log')}")
    latest = latest_adapter(config.dir)
    print(f"latest adapter: {latest.identity} ({latest.path})" if latest else "latest adapter: none")
    return 0


def _feedback_train(args) -> int:
    from .feedback import FeedbackBuffer, start_training

    config = _feedback_config(args)
    pid = start_training(FeedbackBuffer(config.dir, config.buffer_size), config)
    print(f"training started in the background (pid {pid}); see `sleepy feedback status`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
