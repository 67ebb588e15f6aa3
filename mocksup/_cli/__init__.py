"""The pieces of the ``mocksup`` command that :mod:`mocksup.cli` wires together.

``cli.py`` keeps the parser, ``main`` and ``mocksup up``'s start and stop; these modules hold
the rest, one concern each: ``errors`` (usage errors and advice in the command line's own
terms), ``settings`` (options from the environment, the vLLM options, the TOML file),
``live`` (the status line, ``--print`` and ``--dump`` of ``mocksup up``), ``query`` (the
commands that look at a running collector) and ``tools`` (``replay``, ``env``, ``health``).
"""
