"""`python -m alexnetc`."""

from alexnetc.cli.main import main

raise SystemExit(main())
