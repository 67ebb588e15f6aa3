"""``python -m mocksup``: the same as the ``mocksup`` command."""

from mocksup.cli import main

raise SystemExit(main())
