"""The `bitnet-lab` command line: ``main`` (cli/app.py) and one module per subcommand."""

from __future__ import annotations

from bitnet_lab.cli.app import main

__all__ = ["main"]
