"""The ``mulligan`` commands: command-line apps on top of the training layer.

Each module has a ``main(argv) -> int`` that :mod:`mulligan.cli` dispatches to. Commands may import
every tier below them (infrastructure and methods); nothing below imports a command.
"""
