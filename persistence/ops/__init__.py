"""Operations on a saver: the backup writer (``backup``), the restorer (``restore``), the scheduler
(APScheduler, ``scheduler``), commands from other processes (``commands``), the operator's settings
(``settings``), closing at exit and on SIGTERM (``lifecycle``), and what a probe or a metrics scrape reads:
``health`` (``saver.health()``) and ``telemetry`` (the components' counters, ``saver.telemetry()``);
the import of a PostgresSaver database (``importer``, reading through ``import_source`` and deciding
what to write with ``import_plan``), the observer's reads (``observer``), figures and recovery files.

May import ``persistence.fleet``, ``persistence.memory``, ``persistence.store`` and the base modules;
never the CLI or the facade.
"""
