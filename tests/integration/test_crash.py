"""A create answered 201 survives a crash: SIGKILL a real node under load, cycle after cycle.

The experiment lives in ``bench/crash_loop.py`` (``python -m bench.crash_loop``
runs it for longer); this test runs 20 cycles of it on one data directory and
checks the file after every kill and once more over HTTP at the end. The kill
delays come from a seeded ``random.Random``; a failure names the seed, and
``EDGECARE_CRASH_SEED=<seed>`` replays the same delays.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import pytest

from bench.crash_loop import check_over_http, run_crash_loop

log = logging.getLogger(__name__)

CYCLES = 20
CONCURRENCY = 24
HTTP_SAMPLE = 50
SEED_ENV = "EDGECARE_CRASH_SEED"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_acknowledged_creates_survive_sigkill(tmp_path: Path) -> None:
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**32))
    data_dir = tmp_path / "node"
    started = time.monotonic()

    result = run_crash_loop(
        data_dir,
        cycles=CYCLES,
        concurrency=CONCURRENCY,
        seed=seed,
        min_ms=150,
        max_ms=400,
        on_cycle=lambda report: log.info("%s", report.line(CYCLES)),
    )

    context = f"seed {seed} (replay with {SEED_ENV}={seed}); data dir {data_dir}\n{result.summary()}"
    log.info("%s", context)
    final = result.final
    assert len(result.reports) == CYCLES, context
    assert result.acked, f"no create was answered 201 in any cycle\n{context}"
    assert sum(r.load.errors_after_kill for r in result.reports) > 0, (
        f"no kill cut a request in flight\n{context}"
    )
    assert result.integrity_failures == 0, context
    assert not final.lost, context
    assert not final.unlogged, context
    assert not final.altered, context
    assert not final.missing_seqs, context
    assert final.changelog_rows == final.last_seq == final.sequence_counter, context

    http = check_over_http(data_dir, result.acked, sample=HTTP_SAMPLE, rng=random.Random(seed))
    assert http.checked == min(HTTP_SAMPLE, len(result.acked)), context
    assert http.ok, f"after a restart: {list(http.failures)}\n{context}"
    assert http.readyz_last_seq >= final.last_seq, (
        f"restarted node reports changelog_last_seq {http.readyz_last_seq}\n{context}"
    )
    log.info(
        "%d SIGKILL cycles, %d acknowledged creates, none lost; %.1f s (seed %d)",
        len(result.reports),
        len(result.acked),
        time.monotonic() - started,
        seed,
    )
