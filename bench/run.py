"""Runs every part of the benchmark in order and writes what it measured."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
import warnings
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("HYBRID_SAVER_NO_SIGNALS", "1")
# the embedded server's platformdirs lookup warns when XDG_RUNTIME_DIR is unset (CI, root): harmless
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

from bench import chart, report  # noqa: E402
from bench.backup import run_backups  # noqa: E402
from bench.contention import run_cuts, run_ops_during_backup, run_puts_during_backup  # noqa: E402
from bench.database import Database  # noqa: E402
from bench.fleet import run_fleet  # noqa: E402
from bench.long import run_long  # noqa: E402
from bench.memory import run_memory  # noqa: E402
from bench.metrics import run_metrics  # noqa: E402
from bench.ops import run_ops  # noqa: E402
from bench.residency import run_residency  # noqa: E402
from bench.restore_scale import run_restore_scale  # noqa: E402
from bench.settings import Settings, current  # noqa: E402
from bench.workload import record_templates  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = 4
PACKAGES = ("langgraph", "langgraph-checkpoint", "langgraph-checkpoint-postgres", "psycopg", "psycopg-binary", "plotly")


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores{' ' + model if model else ''}, Python {platform.python_version()}"


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _code() -> dict[str, str | None]:
    """Which code was measured: the checkout's commit and a hash of the saver's source."""
    import persistence

    digest = hashlib.sha256()
    folder = Path(persistence.__file__).resolve().parent
    for name in sorted(p.name for p in folder.glob("*.py")):
        digest.update((folder / name).read_bytes())
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    try:
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "persistence"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return {
        "git_head": head or None,
        "persistence_modified": bool(dirty),
        "persistence_path": str(folder),
        "saver_store_sha256": digest.hexdigest()[:16],
    }


def _outputs(settings: Settings) -> tuple[Path, Path, Path]:
    """Where results go: the full run's are committed; a quick run never overwrites them."""
    override = os.environ.get("BENCH_OUT", "").strip()
    if override:
        out = Path(override)
        return out / "results.json", out / "bench_growth.html", out / "bench_growth.png"
    if settings.quick:
        out = ROOT / "bench" / "out"
        return out / "results.json", out / "bench_growth.html", out / "bench_growth.png"
    return ROOT / "bench" / "results.json", ROOT / "docs" / "bench_growth.html", ROOT / "docs" / "bench_growth.png"


def main() -> int:
    settings = current()
    started = time.perf_counter()
    t0 = started

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {message}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if settings.quick else "full",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "versions": _versions(),
            "settings": settings.__dict__,
            "code": _code(),
        }
    }
    db = Database()
    try:
        results["meta"]["database"] = db.describe()
        results["meta"]["database_short"] = db.short()
        results["meta"]["database_settings"] = db.settings
        log(f"{results['meta']['mode']} run; {db.describe()}")
        templates = record_templates(TEMPLATES)
        steps = templates[0].steps
        results["meta"]["template"] = {
            "conversations": TEMPLATES,
            "checkpoints_per_thread": len(steps),
            "messages_per_thread": len(steps[-1].checkpoint["channel_values"]["messages"]),
        }
        log("recorded template conversations on the real chat graph")
        log("operations: InMemorySaver vs HybridSaver vs PostgresSaver")
        results["ops"] = run_ops(db, templates, settings, log)
        log("metrics: graph turns with the saver scraped and without")
        results["metrics"] = run_metrics(db, templates, settings, log)
        log(f"puts during the backup of {settings.during_threads:,} threads")
        results["puts_during_backup"] = run_puts_during_backup(db, templates, settings, log)
        log(f"operations during the backup of {settings.during_threads:,} threads")
        results["ops_during_backup"] = run_ops_during_backup(db, templates, settings, log)
        log("lock hold time of the cut")
        results["cuts"] = run_cuts(db, templates, settings, log)
        log("memory per checkpoint")
        results["memory"] = run_memory(db, templates, settings, log)
        log(f"backup and restore throughput at {', '.join(f'{n:,}' for n in settings.sizes)} threads")
        results["backup"] = run_backups(db, templates, settings, log)
        log("residency: cold start, cold and resident turns, a budget under random access")
        results["residency"] = run_residency(db, templates, settings, log)
        log(f"long conversations: one thread to {max(settings.long_turns):,} turns per saver")
        results["long"] = run_long(db, settings, log)
        log("fleet: handoff, throughput with one and two members, backups of four members")
        results["fleet"] = run_fleet(db, settings, log)
        log("restore of every thread at scale, with an app member holding the threads")
        results["restore_scale"] = run_restore_scale(db, templates, settings, log)
    finally:
        db.close()
    results["meta"]["duration_s"] = time.perf_counter() - started
    report.evaluate(results)
    json_path, html_path, png_path = _outputs(settings)
    png_error = chart.write(results, html_path, png_path)
    results["meta"]["chart"] = {"html": str(html_path), "png": None if png_error else str(png_path), "error": png_error}
    report.write_json(results, json_path)
    print(report.render(results))
    print(f"\nwrote {json_path}, {html_path}" + (f", {png_path}" if not png_error else f" (no PNG: {png_error})"))
    return 0


__all__ = ["main"]
