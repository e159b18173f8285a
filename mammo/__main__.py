"""`python -m mammo` is the `mammo` command."""

from mammo.cli import main

raise SystemExit(main())
