import sys

from uvirt.cli.main import main

sys.exit(main())
