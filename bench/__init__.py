"""distlog.bench: benchmark suites, each printing JSON; `distlog bench NAME` or `python bench/NAME.py`."""
