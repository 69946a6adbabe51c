"""`python -m sead.cli`: the same as the `sead` command."""
from sead.cli.main import main

main()
