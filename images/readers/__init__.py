"""One module per source of install knowledge; each has ``read(c: Collector)`` and adds to the plan."""
