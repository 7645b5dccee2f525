import sys

from flamboyance.cli import main

sys.exit(main())
