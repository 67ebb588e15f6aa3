"""``python -m mocksup``: the same as the ``mocksup`` command."""

from mocksup._cli.entry import main

raise SystemExit(main())
