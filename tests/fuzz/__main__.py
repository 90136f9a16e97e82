"""``python -m tests.fuzz``: run every atheris harness for a bounded time (``make fuzz``).

Each target of tests/fuzz/targets.py runs in its own process for ``--seconds`` seconds,
seeded with the target's valid examples and the recorded regressions, with a corpus kept
under ``--corpus`` between runs. libFuzzer writes any crashing input to
tests/fuzz/regressions/<target>/, where tests/fuzz/test_regressions.py replays it in every
``make test``: a crash found here is a failing regression test until the parser is fixed.

    .venv/bin/python -m tests.fuzz --seconds 60              # all targets, 60 s each
    .venv/bin/python -m tests.fuzz --seconds 10 siwe jwks    # some targets

Exit status: 0 when no harness crashed, 1 otherwise (the crashing targets are listed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.targets import TARGETS

REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def _seed_corpus(name: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    seeds = list(TARGETS[name].seeds())
    recorded = REGRESSIONS / name
    if recorded.is_dir():
        seeds += [p.read_bytes() for p in sorted(recorded.iterdir()) if p.is_file()]
    for data in seeds:
        (corpus / f"seed-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)


def run(name: str, *, seconds: int, corpus_root: Path, max_len: int) -> int:
    """Fuzz one target; returns the harness's exit status (0: no crash)."""
    corpus = corpus_root / name
    _seed_corpus(name, corpus)
    artifacts = REGRESSIONS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz._atheris",
        name,
        f"-max_total_time={seconds}",
        f"-max_len={max_len}",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        "-timeout=10",
        "-rss_limit_mb=2048",
        str(corpus),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTKEYS_")}
    with tempfile.TemporaryFile() as log:
        status = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
        log.seek(0)
        tail = log.read().decode("utf-8", "replace").splitlines()[-12:]
    stats = [
        line
        for line in tail
        if line.startswith(("stat::number_of_executed_units", "stat::new_units_added"))
    ]
    print(f"{name:24} status {status}  {'  '.join(s.split(':')[-1].strip() for s in stats)}")
    if status != 0:
        print("\n".join(tail))
    if artifacts.is_dir() and not any(artifacts.iterdir()):
        artifacts.rmdir()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("targets", nargs="*", help=f"default: all of {sorted(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    parser.add_argument("--max-len", type=int, default=8192, help="largest input in bytes")
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path(tempfile.gettempdir()) / "agentkeys-fuzz-corpus",
        help="corpus directory kept between runs",
    )
    args = parser.parse_args(argv)
    names = args.targets or sorted(TARGETS)
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets: {unknown}")
    crashed = [
        name
        for name in names
        if run(name, seconds=args.seconds, corpus_root=args.corpus, max_len=args.max_len) != 0
    ]
    if crashed:
        print(f"crashes in {crashed}: inputs saved under {REGRESSIONS}/<target>/")
        return 1
    print(f"{len(names)} targets, no crash")
    return 0


if __name__ == "__main__":
    sys.exit(main())
