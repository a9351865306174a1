import sys

from deeppert.cli import main

sys.exit(main())
