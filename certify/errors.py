"""The only exceptions a user should ever see: the CLI turns them into one line and exit 2."""


class UserError(Exception):
    """Bad input or usage: a config value, a path, a dataset, a name. The message is one line."""


class CheckFailed(Exception):
    """A regression gate found weaker protection (exit 1)."""
