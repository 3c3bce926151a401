"""``python -m bench``: run the benchmarks, print the table, write the results and the chart."""

from bench.run import main

raise SystemExit(main())
