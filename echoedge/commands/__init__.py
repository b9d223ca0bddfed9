"""The `echo-edge` subcommands, one module per command group.

Each module has `register(sub)`, which adds its parser(s) to the `echo-edge` subparsers, and the
`_cmd_*` handlers they call; `echoedge.cli.build_parser` assembles them. Only the CLI imports
this package. Heavy packages are imported inside the handlers, never at module import time, so
`echo-edge --help` stays fast.
"""
