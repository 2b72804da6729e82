"""The ``uvirt`` command and its subcommands."""
