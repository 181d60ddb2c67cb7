"""Subcommands of `gantry`, one module per area; each exposes `register(subparsers)`."""
