"""``python -m gozaru`` runs the command line (same as the ``gozaru`` console script)."""
from .cli import main

raise SystemExit(main())
