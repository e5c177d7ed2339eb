"""``python -m segcore``: see :mod:`segcore.cli`."""

from segcore.cli import main

raise SystemExit(main())
