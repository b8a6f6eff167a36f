"""Benchmark: a morning's run on the 57 real published feeds, against the naive loop, in one run.

The feeds of ../shared/feeds/real/ (skipped, with a message, when that folder is absent) are
served on loopback with a delay of 250 ms per answer, each feed on its own address (127.0.0.2,
127.0.0.3, ...: real feeds live on different sites). Then, in each round:

  (a) naive: ``feedparser.parse(url)`` for one feed after the other;
  (b) ``pipeline run`` (the installed command, in a process of its own: start-up included) on a
      new archive: fetch, parse, store, classify, compose, render, publish;
  (c) ``pipeline run`` again: every feed answers 304, the issue is already built.

Targets: a/b >= 8; (c) <= 1.0 s of wall time, process start included, broken down into the
process start (interpreter, imports, config and rules: what comes before `Pipeline.run`, and the
exit), the fetch (304s, store) and the rest, from the run's own summary line. Best of
``--rounds`` rounds (the machine may be shared). ``--importtime`` adds a round of (c) under
``python -X importtime`` and prints the slowest imports.

    .venv/bin/python benchmarks/morning.py [--rounds 3] [--latency 0.25] [--importtime]
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import feedparser  # noqa: E402

from benchmarks.feedserver import FeedServer  # noqa: E402

REAL_FEEDS = ROOT.parent / "shared" / "feeds" / "real"
PIPELINE = Path(sys.executable).with_name("pipeline")
SUMMARY = re.compile(r": (\d+) feeds read, (\d+) failed, (\d+) new items, (\d+) stories, ([\d.]+) s "
                     r"\(fetch ([\d.]+) s\)")


@dataclass(frozen=True)
class Run:
    wall: float  # seconds, process start to exit
    cpu: float  # CPU seconds of the process and of its parse workers
    inside: float  # Pipeline.run, as the run reports it
    fetch: float  # its fetch, parse and store
    feeds_read: int
    new_items: int
    stories: int

    @property
    def start(self) -> float:
        """Everything outside Pipeline.run: interpreter, imports, config and rules, exit."""
        return self.wall - self.inside

    @property
    def rest(self) -> float:
        return self.inside - self.fetch


def write_config(folder: Path, urls: list[str], names: list[str]) -> Path:
    feeds = "".join(f"  - id: feed-{n}\n    name: \"{name}\"\n    url: \"{url}\"\n"
                    for n, (url, name) in enumerate(zip(urls, names, strict=True)))
    config = folder / "sources.yaml"
    config.write_text("newsletter:\n  name: Tech Matin\n  base_url: \"https://techmatin.example/archives/\"\n"
                      f"storage:\n  db: data/morning.sqlite3\n  output: out\nfeeds:\n{feeds}", encoding="utf-8")
    shutil.copy(ROOT / "topics.yaml", folder / "topics.yaml")
    return config


def pipeline_run(config: Path, *python_options: str) -> tuple[Run, str]:
    command = [str(PIPELINE), "run", "--config", str(config)]
    if python_options:
        command = [sys.executable, *python_options, "-m", "pipeline", *command[1:]]
    before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=config.parent, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - before
    found = SUMMARY.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"pipeline run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    read, _, new, stories, inside, fetch = found.groups()
    return Run(wall, cpu, float(inside), float(fetch), int(read), int(new), int(stories)), done.stderr


def _children_cpu() -> float:
    """CPU seconds of the finished child processes, their own children included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def naive(urls: list[str]) -> tuple[float, float, int]:
    started, cpu = time.perf_counter(), time.process_time()
    entries = sum(len(feedparser.parse(url).entries) for url in urls)
    return time.perf_counter() - started, time.process_time() - cpu, entries


def slowest_imports(importtime: str, count: int = 12) -> list[tuple[float, str]]:
    """The top-level imports of `python -X importtime` output, slowest first (cumulative s)."""
    found = []
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            if name.startswith(" ") and not name.startswith("  "):  # one space: imported by the top level
                found.append((int(parts[1]) / 1e6, name.strip()))
    return sorted(found, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.25, help="server delay per answer, s (default 0.25)")
    parser.add_argument("--importtime", action="store_true", help="also run (c) under python -X importtime")
    args = parser.parse_args()
    if not REAL_FEEDS.is_dir():
        print(f"skipped: {REAL_FEEDS} is not present (the 57 real feeds this benchmark serves)")
        return 0
    if not PIPELINE.is_file():
        raise SystemExit(f"{PIPELINE}: not found; run `make test` (or install the project) first")
    paths = sorted(REAL_FEEDS.glob("*.xml"))
    bodies = [path.read_bytes() for path in paths]
    # What `pip install` does for an installed package; an editable install in an environment with
    # PYTHONDONTWRITEBYTECODE would otherwise compile the pipeline's modules at every start.
    compileall.compile_dir(ROOT / "pipeline", quiet=1)
    load = os.getloadavg()
    print(f"{len(paths)} real feeds ({sum(map(len, bodies)) / 1e6:.1f} MB), one address each, "
          f"{args.latency * 1000:.0f} ms per answer; {os.cpu_count()} cores, load average {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}; best of {args.rounds} rounds")

    naive_times: list[float] = []
    firsts: list[Run] = []
    seconds: list[Run] = []
    with FeedServer(bodies, hosts=len(bodies), latency=args.latency) as server:
        for round_number in range(1, args.rounds + 1):
            naive_time, naive_cpu, entries = naive(server.urls)
            naive_times.append(naive_time)
            with tempfile.TemporaryDirectory(prefix="bench-morning-") as temp:
                config = write_config(Path(temp), server.urls, [p.stem for p in paths])
                first, _ = pipeline_run(config)
                second, _ = pipeline_run(config)
                if args.importtime and round_number == args.rounds:
                    timed, stderr = pipeline_run(config, "-X", "importtime")
                    print(f"    (c) under -X importtime: {timed.wall:.2f} s; slowest imports:")
                    for seconds_taken, name in slowest_imports(stderr):
                        print(f"        {seconds_taken * 1000:6.0f} ms  {name}")
            firsts.append(first)
            seconds.append(second)
            print(f"round {round_number}: (a) {naive_time:.2f} s (CPU {naive_cpu:.2f}; {entries} entries); (b) "
                  f"{first.wall:.2f} s (CPU {first.cpu:.2f}; {first.feeds_read} feeds, {first.new_items} new items, "
                  f"{first.stories} stories; start {first.start:.2f}, fetch+parse+store {first.fetch:.2f}, rest "
                  f"{first.rest:.2f}); (c) {second.wall:.2f} s (CPU {second.cpu:.2f}; start {second.start:.2f}, "
                  f"fetch {second.fetch:.2f}, rest {second.rest:.2f}; {second.new_items} new items)")
    best_naive = min(naive_times)
    first = min(firsts, key=lambda r: r.wall)
    second = min(seconds, key=lambda r: r.wall)
    ratio = best_naive / first.wall
    print()
    print(f"(a) naive loop                {best_naive:6.2f} s")
    print(f"(b) pipeline run, first run   {first.wall:6.2f} s   a/b = {ratio:.1f}x   target >= 8x: "
          f"{'met' if ratio >= 8 else 'MISSED'}")
    print(f"(c) pipeline run, all 304     {second.wall:6.2f} s   target <= 1.0 s: "
          f"{'met' if second.wall <= 1.0 else 'MISSED'}  (start {second.start:.2f} s, fetch {second.fetch:.2f} s, "
          f"rest {second.rest:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
