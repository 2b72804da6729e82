"""From a parsed command line to a built machine: the ``-device``/``-object``/
``-drive`` table and the runner."""
