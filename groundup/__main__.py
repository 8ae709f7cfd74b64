"""`python -m groundup` runs the CLI (also what torchrun launches)."""
from groundup.cli import main

raise SystemExit(main())
