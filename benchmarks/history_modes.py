"""Which `--sleepy-history` repairs the most koans per model-second?

    python benchmarks/history_modes.py --out DIR [--model SPEC] [--seed-cache DIR] [--max-steps 5]
                                       [--strategy baseline] [--modes none,last,full] [--suite eval-v1]
    python benchmarks/history_modes.py --out DIR --table-only [--max-steps 5]
    python benchmarks/history_modes.py --out DIR --retime none[,last,...] [--model SPEC] [--max-steps 5]

For each history mode, one live pytest run of the suite's koans (eval-v1, the suite
the README's table measured, unless `--suite` names another) with `--max-steps=5`,
greedy, writes DIR/episodes-MODE.jsonl. The prompts do not depend on max-steps, so the
first k steps of a 5-step run are exactly the k-step run: one run per mode gives the
figures for max-steps 1, 3 and 5. A run with `--max-steps 3` first gives the figures
for 1 and 3 sooner; a later run with 5 replays those steps from the cache.

All modes share one completion cache (DIR/cache, first filled from `--seed-cache`, such
as a recorded reference run): step 1 never carries history, so its answers are the same
for every mode, and `last` and `full` coincide at step 2. A replayed answer is charged
its recorded model seconds, so each mode pays for every answer it uses, once.

The table: koans solved within k steps, the model seconds spent on them (the steps up
to k of every koan, tokens alike), and solved koans per model-minute, with the ratio to
the first mode. Model seconds depend on the machine's load while the runs went;
tokens do not, so both are shown.

`--retime MODES` asks the model again, live and one at a time, for every answer of
those modes' episodes that was replayed from the cache at step 2 or later (recorded
in another sitting, perhaps on a busy machine), checks that greedy decoding gives the
same text, and writes the new time into the episode (`retimed: true`; the old file is
kept as episodes-MODE.before-retime.jsonl). Step 1 is left: every mode shares it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

STEPS = (1, 3, 5)


def record(mode: str, model: str, strategy: str, out: Path, max_steps: int, suite: str) -> None:
    episodes = out / f"episodes-{mode}.jsonl"
    episodes.unlink(missing_ok=True)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--model={model}",
               f"--strategy={strategy}", f"--max-steps={max_steps}", f"--sleepy-history={mode}",
               f"--sleepy-suite={suite}",
               f"--sleepy-cache-dir={out / 'cache'}", f"--sleepy-episodes={episodes}",
               f"--sleepy-json={out / f'run-{mode}.json'}", "--sleepy-matrix=off"]
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    (out / f"pytest-{mode}.log").write_text(finished.stdout + finished.stderr)
    if finished.returncode not in (0, 1):  # 1: some koans were not repaired
        raise SystemExit(f"pytest for history={mode} ended with {finished.returncode}; see {out}/pytest-{mode}.log")


def retime(mode: str, model_spec: str, out: Path) -> None:
    from pytest_sleepy.models import CompletionRequest, GenerationSettings, Message, load_model

    model = load_model(model_spec)
    model.preflight()
    path = out / f"episodes-{mode}.jsonl"
    episodes = [json.loads(line) for line in path.read_text().splitlines()]
    asked, differ = 0, []
    for episode in episodes:
        if not episode["cached"] or episode["step"] < 2:
            continue
        request = CompletionRequest(tuple(Message(**m) for m in episode["messages"]),
                                    GenerationSettings(**episode["settings"]))
        live = model.complete(request)
        asked += 1
        if live.text != episode["response"]:
            # Another answer's time would not be this answer's cost: keep the recorded one.
            differ.append(f"{episode['koan']} step {episode['step']}")
            continue
        episode["recorded_seconds"], episode["retimed"] = round(live.seconds, 4), True
    backup = out / f"episodes-{mode}.before-retime.jsonl"
    if not backup.exists():  # a second retime keeps the times first recorded
        shutil.copyfile(path, backup)
    path.write_text("".join(json.dumps(e) + "\n" for e in episodes))
    print(f"history={mode}: {asked} answers asked again; {len(differ)} differ from the recorded ones "
          "(their recorded times are kept)"
          + (f" ({', '.join(differ)})" if differ else ""), flush=True)


def step_cost(episode: dict) -> float:
    return episode["recorded_seconds"] if episode["cached"] else episode["model_seconds"]


def table_rows(out: Path, modes: list[str], max_steps: int) -> list[list]:
    rows, reference = [], {}
    for mode in modes:
        by_koan: dict[str, list[dict]] = defaultdict(list)
        for line in (out / f"episodes-{mode}.jsonl").read_text().splitlines():
            episode = json.loads(line)
            by_koan[episode["koan"]].append(episode)
        for steps in (k for k in STEPS if k <= max_steps):
            solved = seconds = tokens_in = tokens_out = 0
            for attempts in by_koan.values():
                used = [a for a in sorted(attempts, key=lambda a: a["step"]) if a["step"] <= steps]
                solved += any(a["verdict"] and a["verdict"]["passed"] for a in used)
                seconds += sum(step_cost(a) for a in used)
                tokens_in += sum(a["tokens_in"] for a in used)
                tokens_out += sum(a["tokens_out"] for a in used)
            per_minute = 60 * solved / seconds if seconds else 0.0
            reference.setdefault(steps, per_minute)
            ratio = per_minute / reference[steps] if reference[steps] else float("nan")
            rows.append([mode, steps, f"{solved}/{len(by_koan)}", f"{seconds:.0f}", f"{tokens_in}+{tokens_out}",
                         f"{per_minute:.2f}", f"{ratio:.2f}"])
    return sorted(rows, key=lambda row: (row[1], modes.index(row[0])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the cache, episodes and logs")
    parser.add_argument("--model", help="model spec (default: llamacpp: on the Qwen2.5-Coder 1.5B GGUF)")
    parser.add_argument("--seed-cache", type=Path, help="completion cache to start from (copied, never written)")
    parser.add_argument("--strategy", default="baseline")
    parser.add_argument("--max-steps", type=int, default=max(STEPS), choices=STEPS, help="steps of each run")
    parser.add_argument("--modes", default="none,last,full", help="comma-separated history modes, in table order")
    parser.add_argument("--suite", default="eval-v1", help="the eval suite to run (default: eval-v1)")
    parser.add_argument("--table-only", action="store_true", help="print the table from DIR's episodes, run nothing")
    parser.add_argument("--retime", metavar="MODES", help="time the replayed answers of these modes again (above)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    model = args.model
    if args.retime and args.table_only:
        parser.error("--retime asks the model again; it cannot go with --table-only")
    if model is None and not args.table_only:
        from realmodel import qwen_gguf

        model = f"llamacpp:{qwen_gguf()}?n_ctx=8192&n_threads=2"  # the README table's setup
    if args.retime:
        for mode in args.retime.split(","):
            retime(mode, model, args.out)
    elif not args.table_only:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.seed_cache and not (args.out / "cache").exists():
            shutil.copytree(args.seed_cache, args.out / "cache", ignore=shutil.ignore_patterns("verdicts"))
        for mode in modes:
            record(mode, model, args.strategy, args.out, args.max_steps, args.suite)
    print(tabulate(table_rows(args.out, modes, args.max_steps),
                   headers=["history", "max-steps", "solved", "model s", "tokens in+out", "solved/model-min",
                            f"ratio to {modes[0]}"]))


if __name__ == "__main__":
    main()
