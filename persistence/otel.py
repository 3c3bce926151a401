"""OpenTelemetry metrics of HybridSaver, for hosts that export OpenTelemetry (the Agent Server ships the SDK).

    from persistence.otel import instrument
    instrument(saver)                      # on the global MeterProvider, or instrument(saver, provider)

The gauges and counters of :data:`persistence.metrics.SAVER_METRICS` become observable instruments with
the same names (counters without ``_total``, which OpenTelemetry's Prometheus exporter adds back) and the
same labels as attributes, read at each collection from the same figures as the Prometheus collector (one
read per collection, shared by every instrument). The histograms are left out: OpenTelemetry has no
asynchronous histogram; ``persistence.metrics.SaverCollector`` serves them. Needs ``opentelemetry-api``
(imported only when :func:`instrument` is called). A facade-level module like ``persistence.metrics``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from persistence.metrics import COUNTER, GAUGE, SAVER_METRICS, Sample, saver_samples

if TYPE_CHECKING:
    from persistence.saver import HybridSaver

#: seconds one read of the saver's figures serves the instruments of one collection
SHARED_FOR = 0.5


class _Figures:
    """The saver's samples, read once per collection (the callbacks of one collection come in a burst)."""

    def __init__(self, saver: HybridSaver) -> None:
        self.saver = saver
        self._lock = threading.Lock()
        self._at = 0.0
        self._by_name: dict[str, list[Sample]] = {}

    def of(self, name: str) -> list[Sample]:
        with self._lock:
            now = time.monotonic()
            if now - self._at > SHARED_FOR:
                by_name: dict[str, list[Sample]] = defaultdict(list)
                for sample in saver_samples(self.saver):
                    by_name[sample[0]].append(sample)
                self._by_name, self._at = by_name, now
            return self._by_name.get(name, [])


def instrument(saver: HybridSaver, meter_provider: Any = None) -> list[Any]:
    """Register the saver's gauges and counters on ``meter_provider`` (default: the global one); returns
    the instruments. Call it once per saver."""
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation

    from persistence import __version__

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    meter = provider.get_meter("persistence.hybrid_saver", __version__)
    figures = _Figures(saver)
    made = []
    for spec in SAVER_METRICS:
        if spec.kind not in (GAUGE, COUNTER):
            continue

        def observe(
            _options: CallbackOptions, _name: str = spec.name, _labels: tuple[str, ...] = spec.labels
        ) -> list[Any]:
            return [
                Observation(float(value), dict(zip(_labels, values, strict=True)))  # type: ignore[arg-type]
                for _n, values, value in figures.of(_name)
            ]

        if spec.kind == GAUGE:
            made.append(meter.create_observable_gauge(spec.name, callbacks=[observe], description=spec.help))
        else:
            name = spec.name.removesuffix("_total")
            made.append(meter.create_observable_counter(name, callbacks=[observe], description=spec.help))
    return made


__all__ = ["SHARED_FOR", "instrument"]
