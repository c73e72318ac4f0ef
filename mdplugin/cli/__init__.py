"""The `mdplugin` command line."""

from mdplugin.cli.main import main

__all__ = ["main"]
