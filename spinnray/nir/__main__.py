import sys

from spinnray.nir.cli import main

sys.exit(main())
