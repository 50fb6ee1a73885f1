"""release.build and release.test on real files: the shipped example app, and trees of
the test's own for failures, symlinks and name clashes."""

import hashlib
import sys
import tarfile

import pytest

from agents.skills import SkillContext, SkillError, SkillInputError, skill_execute
from tests.release_app import BROKEN_ERROR, SHIPPED, component_write, source_tree

CTX = SkillContext(agent="tester", idempotency_key="run-1:build[0]:1")


def run(name, **inputs):
    return skill_execute(name, inputs, context=CTX)


@pytest.fixture
def artifacts(tmp_path, settings):
    settings.HIVE_RELEASE_ARTIFACT_DIR = tmp_path / "artifacts"
    return settings.HIVE_RELEASE_ARTIFACT_DIR


@pytest.fixture
def tree(tmp_path, settings, artifacts):
    """HIVE_RELEASE_SOURCE_DIR pointed at a copy of the example app with `broken` and
    the `outside` symlink."""
    settings.HIVE_RELEASE_SOURCE_DIR = source_tree(tmp_path / "app")
    return settings.HIVE_RELEASE_SOURCE_DIR


# --- release.build ------------------------------------------------------------------


def test_release_build_packages_the_component_and_reports_the_files_sha256(artifacts):
    result = run("release.build", component="api", version="1.4.0")

    archive = artifacts / "1.4.0" / "api.tar.gz"
    assert result == {
        "component": "api",
        "version": "1.4.0",
        "path": str(archive),
        "size": archive.stat().st_size,
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "files": 2,
    }
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["api-1.4.0/orders.py", "api-1.4.0/test_orders.py"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
            (0, 0, 0, "", "", 0o644)
        }
        packed = tar.extractfile("api-1.4.0/orders.py").read()
    assert packed == (SHIPPED / "api" / "orders.py").read_bytes()


def test_release_build_gives_the_same_bytes_every_time(artifacts):
    first = run("release.build", component="web", version="1.0.0")
    again = run("release.build", component="web", version="1.0.0")

    assert first["sha256"] == again["sha256"]
    assert sorted(p.name for p in (artifacts / "1.0.0").iterdir()) == ["web.tar.gz"]  # no temp


def test_release_build_leaves_bytecode_out(tree):
    component_write(tree, "api", {"__pycache__/orders.cpython-311.pyc": "x", "stale.pyc": "x"})

    result = run("release.build", component="api", version="1.4.0")

    with tarfile.open(result["path"]) as tar:
        assert tar.getnames() == ["api-1.4.0/orders.py", "api-1.4.0/test_orders.py"]


def test_release_build_refuses_a_path_in_the_component_name(tree):
    with pytest.raises(SkillInputError) as caught:
        run("release.build", component="../secret", version="1.4.0")

    assert str(caught.value) == (
        "release.build: inputs.component: '../secret' does not match '^[a-z0-9][a-z0-9-]*$'"
    )


def test_release_build_refuses_a_component_that_resolves_outside_the_tree(tree, artifacts):
    with pytest.raises(SkillInputError) as caught:
        run("release.build", component="outside", version="1.4.0")

    assert str(caught.value) == (
        "release.build: inputs.component: 'outside' resolves outside HIVE_RELEASE_SOURCE_DIR; "
        "refusing it"
    )
    assert not artifacts.exists()


def test_release_build_refuses_a_symlink_inside_a_component(tree, tmp_path):
    (tree / "api" / "key.txt").symlink_to(tmp_path / "secret" / "key.txt")

    with pytest.raises(SkillInputError, match=r"^release.build: api: key.txt is a symlink; refus"):
        run("release.build", component="api", version="1.4.0")


def test_release_build_names_the_components_there_are(tree):
    with pytest.raises(SkillInputError) as caught:
        run("release.build", component="mobile", version="1.4.0")

    assert str(caught.value) == (
        "release.build: inputs.component: no component 'mobile' "
        "(components: api, broken, cli, outside, web)"
    )


def test_release_build_refuses_a_version_that_could_leave_the_artifact_dir(artifacts):
    with pytest.raises(SkillInputError, match=r"inputs.version: '\.\./x' does not match"):
        run("release.build", component="api", version="../x")


# --- release.test -------------------------------------------------------------------


@pytest.mark.parametrize("component, ran", [("api", 6), ("web", 3), ("cli", 3)])
def test_release_test_runs_each_shipped_components_suite(component, ran):
    bytecode_before = set(SHIPPED.rglob("*.pyc"))

    result = run("release.test", component=component)

    assert {k: result[k] for k in ("component", "ran", "passed", "skipped")} == {
        "component": component, "ran": ran, "passed": ran, "skipped": 0,
    }  # fmt: skip
    assert result["output"].rstrip().endswith("OK")
    assert set(SHIPPED.rglob("*.pyc")) == bytecode_before  # no bytecode written


def test_release_test_fails_naming_the_failing_tests_and_is_not_retried(tree):
    with pytest.raises(SkillError) as caught:
        run("release.test", component="broken")

    assert str(caught.value) == BROKEN_ERROR
    assert caught.value.retryable is False


def test_release_test_with_no_tests_fails(tree):
    component_write(tree, "docs", {"README.md": "no tests here\n"})

    with pytest.raises(SkillError) as caught:
        run("release.test", component="docs")

    assert str(caught.value) == (
        "release.test: docs: no tests found (unittest discovery of test*.py)"
    )


def test_release_test_counts_skipped_tests_apart(tree):
    component_write(tree, "partial", {"test_skip.py": """
        import unittest

        class T(unittest.TestCase):
            def test_runs(self):
                pass

            @unittest.skip("not on this platform")
            def test_skipped(self):
                pass
    """})  # fmt: skip

    result = run("release.test", component="partial")

    assert (result["ran"], result["passed"], result["skipped"]) == (2, 1, 1)


def test_release_test_imports_each_components_own_modules_and_restores_the_process(
    tmp_path, settings
):
    # The same module name in two trees: the second run must see its own file, as a
    # later step in the same worker process would.
    for value in ("a", "b"):
        component_write(tmp_path / value, "same", {
            "shared_name.py": f"VALUE = {value!r}\n",
            "test_it.py": f"""
                import unittest
                import shared_name

                class T(unittest.TestCase):
                    def test_value(self):
                        self.assertEqual(shared_name.VALUE, {value!r})
            """,
        })  # fmt: skip
    path_before = list(sys.path)

    for value in ("a", "b"):
        settings.HIVE_RELEASE_SOURCE_DIR = tmp_path / value
        assert run("release.test", component="same")["passed"] == 1

    assert "shared_name" not in sys.modules and "test_it" not in sys.modules
    assert sys.path == path_before
    assert not list(tmp_path.rglob("__pycache__"))
