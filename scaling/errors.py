"""The one exception type for problems a user can fix. The CLI prints its message as one line."""


class UserError(Exception):
    """Bad input (config key, file, shard, directory): one line naming what is wrong; exit code 2."""
