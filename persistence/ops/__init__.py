"""Operations on a saver: the backup writer (``backup``), the restorer (``restore``), the scheduler
(APScheduler, ``scheduler``), commands from other processes (``commands``), the operator's settings
(``settings``) and closing at exit and on SIGTERM (``lifecycle``).

May import ``persistence.fleet``, ``persistence.memory``, ``persistence.store`` and the base modules;
never the CLI or the facade.
"""
