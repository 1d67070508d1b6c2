"""The one exception type for problems a user can fix. The CLI prints its message as one line."""


class UserError(Exception):
    """Bad input (config key, file, shard, directory): one line naming what is wrong; exit code 2."""


def require_file(path: str, key: str) -> "Path":
    """The path of an existing file, or a UserError naming the file and the config key that names it."""
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{key}: weight file {p} not found")
    return p
