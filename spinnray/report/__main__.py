import sys

from spinnray.report.cli import main

sys.exit(main())
