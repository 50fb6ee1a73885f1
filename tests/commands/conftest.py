import textwrap
from pathlib import Path

import pytest


@pytest.fixture
def definitions(tmp_path, settings):
    """A command folder of the test's own, on HIVE_COMMAND_DIRS; `write(path, text)`
    adds a definition file to it."""
    root = tmp_path / "commands"
    root.mkdir()
    settings.HIVE_COMMAND_DIRS = [root]

    def write(relative: str, text: str) -> Path:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    write.root = root
    return write
