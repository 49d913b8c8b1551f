"""``python -m benchmarks [SCENARIO] ...``: see cli.py; ``--list`` for the scenarios."""
from benchmarks.cli import main

raise SystemExit(main())
