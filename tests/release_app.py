"""Source trees of a test's own for release.build and release.test.

They are written under tmp_path at run time, never kept in tests/: pytest would
collect a failing component's test*.py files as part of Hive's own suite.
"""

import shutil
import textwrap
from pathlib import Path

from django.conf import settings

SHIPPED = Path(settings.BASE_DIR) / "examples" / "app"

# Two of its three tests fail, one by assertion and one by an exception.
BROKEN = {
    "calc.py": """
        def add(a, b):
            return a + b + 1  # the bug the suite catches

        def ratio(a, b):
            return a / b
    """,
    "test_calc.py": """
        import unittest

        from calc import add, ratio


        class CalcTest(unittest.TestCase):
            def test_adds(self):
                self.assertEqual(add(1, 2), 3)

            def test_divides(self):
                self.assertEqual(ratio(1, 0), 0)

            def test_ratio(self):
                self.assertEqual(ratio(4, 2), 2)
    """,
}
BROKEN_ERROR = (
    "release.test: broken: 2 of 3 tests failed: "
    "test_calc.CalcTest.test_adds (failure: AssertionError: 4 != 3), "
    "test_calc.CalcTest.test_divides (error: ZeroDivisionError: division by zero)"
)


def component_write(root: Path, name: str, files: dict[str, str]) -> Path:
    """Write a component folder `name` under `root` from {relative path: text}."""
    folder = root / name
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def source_tree(root: Path) -> Path:
    """The shipped example app plus `broken` (failing tests) and `outside` (a symlink
    to a folder beside the tree, which must never be read)."""
    shutil.copytree(SHIPPED, root)
    component_write(root, "broken", BROKEN)
    secret = component_write(root.parent, "secret", {"key.txt": "not for release\n"})
    (root / "outside").symlink_to(secret, target_is_directory=True)
    return root
