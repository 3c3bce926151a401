"""Side-by-side benchmarks of HybridSaver against InMemorySaver, PostgresSaver and raw COPY.

Run ``python -m bench`` (``make bench``); ``BENCH_QUICK=1`` runs smaller sizes in under two minutes.
See docs/BENCH.md for what is measured and what the ratios mean.
"""
