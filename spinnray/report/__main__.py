import sys

from spinnray.report.build import main

sys.exit(main())
