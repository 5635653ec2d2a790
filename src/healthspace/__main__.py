"""``python -m healthspace`` runs the CLI."""

from healthspace.cli.main import main

main()
