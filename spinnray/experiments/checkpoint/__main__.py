from spinnray.experiments.checkpoint.cli import main

raise SystemExit(main())
