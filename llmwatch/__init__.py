"""The ``llmwatch`` command and the helpers that the detector, serving and demo packages share.

The packages never import each other: each adds its subcommands to ``llmwatch`` through the
``llmwatch.commands`` entry points declared in ``pyproject.toml``.
"""
