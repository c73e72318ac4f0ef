"""`python -m mdplugin ...`: the `mdplugin` command, for environments whose scripts folder is not on PATH."""

from mdplugin.cli.main import main

main()
