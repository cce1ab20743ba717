"""`python -m secagg` runs the command line."""

from secagg.cli import main

raise SystemExit(main())
