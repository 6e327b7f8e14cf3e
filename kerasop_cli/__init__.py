"""``kerasop``: the command line on top of the other packages (core, trainer, server).

Nothing imports this package; it may import all of them (the import-linter
contracts in pyproject.toml say so).
"""
