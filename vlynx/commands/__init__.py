"""One module per `vlynx` subcommand; each exposes `register(subparsers, common)`."""
