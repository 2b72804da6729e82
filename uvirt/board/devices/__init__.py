"""Device models.  Each is a plain object with ``reset()``, ``read(offset, size)`` and
``write(offset, size, value)`` (or a ``PciFunction``); none imports Unicorn."""
