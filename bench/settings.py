"""How big each part of the benchmark is: the full run and the quick one (``BENCH_QUICK=1``)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    quick: bool
    #: first-backup sizes, in threads of 30 checkpoints (20 messages) each
    sizes: tuple[int, ...]
    #: repetitions of each size's backup / raw COPY pair (median taken); one at the largest size
    #: of the full run
    repeats: int
    #: PostgresSaver writes the same checkpoints up to this many threads (it is ~50x slower per row)
    postgres_max_threads: int
    #: graph turns: threads per saver, each driven through 10 turns (20 messages)
    turn_threads: int
    #: single operations (get_tuple, list, put, put_writes) per saver
    op_samples: int
    #: threads of the large state whose backup runs while operations are measured
    during_threads: int
    #: small backups whose cut (lock hold) is timed, and threads changed before each
    cuts: int
    cut_threads: int
    #: threads for memory per checkpoint (tracemalloc)
    memory_threads: int
    #: puts timed while the large backup runs, one every ``put_pause`` seconds
    put_pause: float
    #: seconds of puts before and after the large backup (the idle baseline)
    idle_seconds: float
    #: threads of the store a cold start opens (30 checkpoints each)
    cold_start_threads: int = 10_000
    #: cold threads turned once against PostgresSaver (and then as resident threads against InMemorySaver)
    miss_threads: int = 40
    #: threads of the random-access run (the budget holds a tenth of them) and its turns
    budget_threads: int = 2_000
    budget_turns: int = 2_000
    #: handoff samples; fleet throughput seconds per member count, and client threads per member (four
    #: keep one member busy; more only add contention for its GIL)
    handoff_samples: int = 200
    fleet_seconds: float = 20.0
    fleet_clients: int = 4
    #: lengths (turns) at which the long conversation is measured
    long_turns: tuple[int, ...] = (100, 300, 1_000)


FULL = Settings(
    quick=False,
    sizes=(100, 1_000, 10_000),
    repeats=3,
    postgres_max_threads=1_000,
    turn_threads=30,
    op_samples=2_000,
    during_threads=10_000,
    cuts=400,
    cut_threads=5,
    memory_threads=1_000,
    put_pause=0.001,
    idle_seconds=6.0,
)

QUICK = Settings(
    quick=True,
    sizes=(30, 100, 500),
    repeats=2,
    postgres_max_threads=100,
    turn_threads=6,
    op_samples=300,
    during_threads=500,
    cuts=60,
    cut_threads=5,
    memory_threads=100,
    put_pause=0.001,
    idle_seconds=1.5,
    cold_start_threads=500,
    miss_threads=12,
    budget_threads=300,
    budget_turns=300,
    handoff_samples=40,
    fleet_seconds=4.0,
    long_turns=(50, 150),
    fleet_clients=4,
)


def current() -> Settings:
    return QUICK if os.environ.get("BENCH_QUICK", "").strip() not in ("", "0") else FULL


__all__ = ["FULL", "QUICK", "Settings", "current"]
