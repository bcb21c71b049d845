import sys

from regops.cli import main

sys.exit(main())
