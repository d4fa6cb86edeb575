import sys

from spinnray.data.keywords.cli import main

sys.exit(main())
