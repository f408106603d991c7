"""Subcommands of the kvmlab CLI; each module exports register(subparsers)."""
