"""``python -m gozaru`` runs the command line (same as the ``gozaru`` console script)."""
from .lab.cli import main

raise SystemExit(main())
