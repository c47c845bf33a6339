"""Path handling shared by the config sections: relative paths are relative to the config file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pydantic import ValidationInfo

# Key in the pydantic validation context under which edge.config.load passes the config's folder.
CONFIG_DIR_KEY = "config_dir"


def relative_to_config(path: Path, info: ValidationInfo) -> Path:
    """Resolve a relative path against the config file's folder, as a user reading it expects.

    Under systemd the working directory is "/", so cwd-relative paths would silently point
    somewhere else than the config suggests. Without a loader context (models built in code)
    the path is returned unchanged. "~" is expanded in both cases when it can be.
    """
    # "~user" for an unknown user, or no $HOME: keep the path literal.
    with contextlib.suppress(RuntimeError):
        path = path.expanduser()
    config_dir = (info.context or {}).get(CONFIG_DIR_KEY)
    if config_dir is None or path.is_absolute():
        return path
    # normpath, not resolve(): tidy ".." without replacing symlinks the user chose.
    return Path(os.path.normpath(Path(config_dir) / path))
