"""Subcommands of `gantry`, one module per area; each exposes `register(subparsers, command)`,
which adds the parsers of its commands (only `command`'s when it is given and the module has
several worth skipping: `gantry` builds the parser of the command it runs, not all of them)."""
