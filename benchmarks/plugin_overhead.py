"""What does the plugin itself cost per item, beyond the model and verification?

    python benchmarks/plugin_overhead.py [--rounds 5] [--strategies baseline,hints]

Runs the eval koans as pytest items (rustfix model, warm caches, serial) and, in the
same run, a session of as many plain `def test(): pass` items: pytest's own floor per
item. For the koan session, the time inside the items is split with the outcomes'
own clocks into model time, verification time and the rest, which is the plugin's
overhead (prompt building, extraction, diffs, outcome records, cache lookups of
completions). Each session is a fresh `pytest` process; its run phase (first item
start to last item end) is timed by a small plugin, so interpreter start and
collection are reported apart. Medians over rounds; the sessions alternate so that
drift in the machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TIMING_PLUGIN = textwrap.dedent('''
    import json, os, time

    marks = {}

    def pytest_collection_finish(session):
        marks["collected"] = time.perf_counter()
        marks["items"] = len(session.items)

    def pytest_runtest_logstart(nodeid, location):
        marks.setdefault("first", time.perf_counter())

    def pytest_runtest_logfinish(nodeid, location):
        marks["last"] = time.perf_counter()

    def pytest_unconfigure(config):
        with open(os.environ["TIMING_OUT"], "w") as out:
            json.dump({"items": marks["items"], "run": marks["last"] - marks["first"]}, out)
''')


def session(folder: Path, args: list[str], timing: Path) -> dict:
    env_timing = {"TIMING_OUT": str(timing), "PYTHONPATH": str(folder)}
    import os

    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "sleepy_timing", *args],
                   cwd=folder, env={**os.environ, **env_timing}, capture_output=True, check=False)
    return json.loads(timing.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--strategies", default="baseline,hints")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sleepy-overhead-") as work:
        root = Path(work)
        koans = root / "koans"
        shutil.copytree(REPO / "koans", koans)
        (root / "pyproject.toml").write_text(
            f'[tool.pytest.ini_options]\ntestpaths = ["koans"]\nsleepy_strategies = "{REPO / "strategies"}"\n')
        (root / "sleepy_timing.py").write_text(TIMING_PLUGIN)
        count = sum(1 for p in koans.rglob("*.toml") if "split = \"eval\"" in p.read_text())
        count *= len(args.strategies.split(","))
        plain = root / "plain"
        plain.mkdir()
        (plain / "sleepy_timing.py").write_text(TIMING_PLUGIN)
        (plain / "test_plain.py").write_text(
            "import pytest\n\n@pytest.mark.parametrize('n', range(%d))\ndef test_plain(n):\n    pass\n" % count)

        koan_args = [f"--strategy={args.strategies}", "--sleepy-json=run.json"]
        session(root, koan_args, root / "warm.json")  # warm the verdict and completion caches

        rows = {"koan": [], "plain": [], "model": [], "verify": []}
        for _ in range(args.rounds):
            measured = session(root, koan_args, root / "t.json")
            outcomes = json.loads((root / "run.json").read_text())["outcomes"]
            rows["koan"].append(measured["run"] / measured["items"])
            rows["model"].append(sum(o["model_seconds"] for o in outcomes) / len(outcomes))
            rows["verify"].append(sum(o["verify_seconds"] for o in outcomes) / len(outcomes))
            floor = session(plain, [], plain / "t.json")
            rows["plain"].append(floor["run"] / floor["items"])

    per_item = statistics.median(rows["koan"])
    model, verify = statistics.median(rows["model"]), statistics.median(rows["verify"])
    overhead = per_item - model - verify
    floor = statistics.median(rows["plain"])
    print(f"{count} items per session ({args.strategies}), rustfix, warm caches, {args.rounds} rounds, medians")
    print(f"  koan item, all in          {1000 * per_item:8.2f} ms")
    print(f"    model (as recorded)      {1000 * model:8.2f} ms")
    print(f"    verification (cached)    {1000 * verify:8.2f} ms")
    print(f"    plugin overhead          {1000 * overhead:8.2f} ms")
    print(f"  plain pytest item (floor)  {1000 * floor:8.2f} ms")
    print(f"  ratio overhead / floor     {overhead / floor:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
