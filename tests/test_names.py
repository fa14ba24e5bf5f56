"""hyperhive.names: the one check every agent name passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hyperhive.errors import BadName
from hyperhive.names import (
    MANAGER,
    OPERATOR,
    RESERVED,
    SYSTEM,
    agent_dir,
    is_valid_name,
    validate_name,
    validate_recipient,
    validate_spawnable,
)

GOOD = ["a", "m1nd", "a-b-1", "z" * 31, "a" + "0" * 30, "abc-", "a--b", "operator", "system"]
BAD_STRINGS = [
    "../x", "A", "Ab", "aB", "a/b", "", "a\x00b", "1a", "-a", "a" * 32, ".", "..", "a.b", "a_b",
    " a", "a ", "a\n", "\na", "é", "a\u0430",  # latin a + cyrillic a
    "/a", "a\\b", "~a", "a:b",
]
NON_STRINGS = [None, 1, 1.5, b"a", ["a"], ("a",), {"a": 1}, True, Path("a")]


@pytest.mark.parametrize("name", GOOD)
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == name
    assert is_valid_name(name)


@pytest.mark.parametrize("name", BAD_STRINGS, ids=repr)
def test_validate_name_refuses_strings(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadName) as exc:
        validate_name(name)
    assert exc.value.code == "bad_name"
    assert repr(name) in exc.value.message


@pytest.mark.parametrize("name", NON_STRINGS, ids=repr)
def test_validate_name_refuses_non_strings(name: object) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadName) as exc:
        validate_name(name)
    assert "must be a string" in exc.value.message
    assert type(name).__name__ in exc.value.message


def test_length_boundary() -> None:
    assert validate_name("a" * 31) == "a" * 31
    with pytest.raises(BadName):
        validate_name("a" * 32)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_validate_spawnable_refuses_reserved(name: str) -> None:
    assert validate_name(name) == name  # a valid name ...
    with pytest.raises(BadName, match="reserved"):
        validate_spawnable(name)  # ... that no container may take


def test_reserved_names() -> None:
    assert RESERVED == {OPERATOR, SYSTEM} == {"operator", "system"}
    assert MANAGER == "m1nd"
    assert validate_spawnable(MANAGER) == MANAGER


@pytest.mark.parametrize("name", ["a", "m1nd", "a-b-1", "z" * 31])
def test_validate_spawnable_accepts(name: str) -> None:
    assert validate_spawnable(name) == name


@pytest.mark.parametrize("name", ["../x", "A", "", None, 3])
def test_validate_spawnable_refuses_bad(name: object) -> None:
    with pytest.raises(BadName):
        validate_spawnable(name)


@pytest.mark.parametrize(("name", "ok"), [("operator", True), ("bob", True), ("../x", False), ("", False)])
def test_validate_recipient(name: str, ok: bool) -> None:
    if ok:
        assert validate_recipient(name) == name
    else:
        with pytest.raises(BadName):
            validate_recipient(name)


# --- agent_dir ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "m1nd", "a-b-1", "z" * 31])
def test_agent_dir_inside_root(tmp_path: Path, name: str) -> None:
    root = tmp_path / "agents"
    root.mkdir()
    path = agent_dir(root, name)  # type: ignore[arg-type]
    assert path == root.resolve() / name
    assert path.parent == root.resolve()
    assert not path.exists()  # computing the path creates nothing


def test_agent_dir_root_need_not_exist(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    assert agent_dir(root, "a") == root.resolve() / "a"  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/../..", "a/b", "/etc", "", None])
def test_agent_dir_refuses_bad_names(tmp_path: Path, name: object) -> None:
    with pytest.raises(BadName):
        agent_dir(tmp_path, name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    ["outside", "root-itself", "nested-inside", "parent"],
)
def test_agent_dir_refuses_symlink_escape(tmp_path: Path, target: str) -> None:
    root = tmp_path / "agents"
    (root / "sub" / "deeper").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = {
        "outside": outside,
        "root-itself": root,
        "nested-inside": root / "sub" / "deeper",
        "parent": tmp_path,
    }[target]
    (root / "evil").symlink_to(dest, target_is_directory=True)
    with pytest.raises(BadName, match="escapes"):
        agent_dir(root, "evil")  # type: ignore[arg-type]


def test_agent_dir_refuses_symlink_to_tmp(tmp_path: Path) -> None:
    root = tmp_path / "agents"
    root.mkdir()
    (root / "evil").symlink_to("/tmp")
    with pytest.raises(BadName) as exc:
        agent_dir(root, "evil")  # type: ignore[arg-type]
    assert exc.value.code == "bad_name"


def test_agent_dir_dangling_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "agents"
    root.mkdir()
    (root / "evil").symlink_to(tmp_path / "nowhere" / "x")
    with pytest.raises(BadName):
        agent_dir(root, "evil")  # type: ignore[arg-type]


def test_agent_dir_symlink_to_sibling_stays_inside(tmp_path: Path) -> None:
    # A link to another directory directly under root still lands inside root.
    root = tmp_path / "agents"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real")
    assert agent_dir(root, "alias") == root.resolve() / "real"  # type: ignore[arg-type]


def test_agent_dir_through_symlinked_root(tmp_path: Path) -> None:
    # The root itself may be a symlink; the agent dir is checked against its target.
    real = tmp_path / "real-root"
    real.mkdir()
    link = tmp_path / "link-root"
    link.symlink_to(real)
    assert agent_dir(link, "a") == real.resolve() / "a"  # type: ignore[arg-type]
    assert os.path.commonpath([agent_dir(link, "a"), real.resolve()]) == str(real.resolve())  # type: ignore[arg-type]
