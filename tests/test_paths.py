"""hyperhive.paths: agent config files and the state dir layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperhive.errors import BadName, BadRequest
from hyperhive.paths import CONFIG_FILE, AgentConfig, StatePaths

# --- AgentConfig.from_json -----------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{}", AgentConfig()),
        ('{"driver": "builtin"}', AgentConfig(driver="builtin")),
        ('{"driver": null}', AgentConfig()),
        ('{"allowed_recipients": null}', AgentConfig()),
        ('{"allowed_recipients": []}', AgentConfig(allowed_recipients=())),
        ('{"allowed_recipients": ["a", "m1nd"]}', AgentConfig(allowed_recipients=("a", "m1nd"))),
        ('{"allowed_recipients": ["operator"]}', AgentConfig(allowed_recipients=("operator",))),
        (
            '{"driver": "builtin", "allowed_recipients": ["b-2"]}',
            AgentConfig(driver="builtin", allowed_recipients=("b-2",)),
        ),
        ('  {"driver": "builtin"}\n\n', AgentConfig(driver="builtin")),
        ('{"driver": "claude"}', AgentConfig(driver="claude")),
        (
            '{"allowed_tools": ["mcp__hyperhive", "Bash(git log:*)"]}',
            AgentConfig(allowed_tools=("mcp__hyperhive", "Bash(git log:*)")),
        ),
    ],
    ids=[
        "empty", "driver", "null-driver", "null-allowed", "allowed-nobody", "allowed-names",
        "allowed-operator", "both", "whitespace", "claude", "tools",
    ],
)
def test_from_json_valid(text: str, want: AgentConfig) -> None:
    got = AgentConfig.from_json(text)
    assert got == want
    assert got.allowed_recipients is None or isinstance(got.allowed_recipients, tuple)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("driver = builtin", "not valid JSON"),
        ("{'driver': 'builtin'}", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('"builtin"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ('{"drivr": "builtin"}', "unknown key(s): drivr"),
        ('{"driver": "builtin", "z": 1, "a": 2}', "unknown key(s): a, z"),
        ('{"allowed": ["a"]}', "unknown key(s): allowed"),
        ('{"driver": "gpt"}', "driver must be one of builtin, claude"),
        ('{"driver": ""}', "driver must be one of"),
        ('{"driver": 1}', "driver must be one of"),
        ('{"driver": ["builtin"]}', "driver must be one of"),
        ('{"allowed_recipients": "a"}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": {"a": 1}}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": ["A"]}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": ["../x"]}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": ["a", 1]}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": [null]}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": [["a"]]}', "allowed_recipients must be a list"),
        ('{"allowed_recipients": true}', "allowed_recipients must be a list"),
        ('{"allowed_tools": "mcp__hyperhive"}', "allowed_tools must be a list"),
        ('{"allowed_tools": ["a,b"]}', "allowed_tools must be a list"),
        ('{"allowed_tools": ["--dangerously-skip-permissions"]}', "allowed_tools must be a list"),
        ('{"allowed_tools": [""]}', "allowed_tools must be a list"),
        ('{"allowed_tools": ["Bash(x\\ny)"]}', "allowed_tools must be a list"),
        ('{"allowed_tools": [1]}', "allowed_tools must be a list"),
    ],
    ids=[
        "empty-text", "truncated", "ini", "single-quotes", "list", "string", "null", "typo-key",
        "two-unknown-keys", "near-miss-key", "bad-driver", "empty-driver", "int-driver", "list-driver",
        "allowed-string", "allowed-object", "allowed-uppercase", "allowed-path", "allowed-int",
        "allowed-null-item", "allowed-nested", "allowed-bool",
        "tools-string", "tools-comma", "tools-flag", "tools-empty", "tools-newline", "tools-int",
    ],
)
def test_from_json_refused(text: str, needle: str) -> None:
    with pytest.raises(BadRequest) as exc:
        AgentConfig.from_json(text, where="cfg.json")
    assert exc.value.code == "bad_request"
    assert needle in exc.value.message
    assert exc.value.message.startswith("cfg.json")


@pytest.mark.parametrize(
    "config",
    [
        AgentConfig(),
        AgentConfig(driver="builtin"),
        AgentConfig(allowed_recipients=()),
        AgentConfig(driver="builtin", allowed_recipients=("a", "operator")),
        AgentConfig(driver="claude", allowed_tools=("mcp__hyperhive__send", "Read")),
    ],
)
def test_to_json_round_trip(config: AgentConfig) -> None:
    text = config.to_json()
    assert text.endswith("\n")
    assert AgentConfig.from_json(text) == config


def test_to_json_leaves_out_unset_keys() -> None:
    assert json.loads(AgentConfig().to_json()) == {}
    assert json.loads(AgentConfig(allowed_recipients=("a",)).to_json()) == {"allowed_recipients": ["a"]}


# --- StatePaths ------------------------------------------------------------------------

def test_layout(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    root = tmp_path.resolve()
    assert p.db == tmp_path / "hive.sqlite"
    assert p.admin_socket == tmp_path / "run" / "admin.sock"
    assert p.agent("a") == root / "agents" / "a"  # type: ignore[arg-type]
    assert p.config_dir("a") == root / "agents" / "a" / "config"  # type: ignore[arg-type]
    assert p.state("a") == root / "agents" / "a" / "state"  # type: ignore[arg-type]
    assert p.socket("a") == root / "agents" / "a" / "run" / "hive.sock"  # type: ignore[arg-type]
    assert p.applied("a") == root / "applied" / "a"  # type: ignore[arg-type]
    assert p.harness_log("a") == root / "agents" / "a" / "harness.log"  # type: ignore[arg-type]  # the daemon's
    assert p.workspace("a") == root / "agents" / "a" / "work"  # type: ignore[arg-type]
    assert p.web_socket("a") == root / "agents" / "a" / "state" / "web.sock"  # type: ignore[arg-type]
    assert p.run("a") == root / "agents" / "a" / "run"  # type: ignore[arg-type]
    assert p.api_socket("a") == root / "agents" / "a" / "run" / "api.sock"  # type: ignore[arg-type]
    assert p.proxy_socket("a") == root / "agents" / "a" / "run" / "proxy.sock"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config",
    [AgentConfig(), AgentConfig(driver="builtin", allowed_recipients=("b", "operator"))],
    ids=["default", "restricted"],
)
def test_create_agent_lays_out_dirs(tmp_path: Path, config: AgentConfig) -> None:
    p = StatePaths(tmp_path)
    p.create_agent("a", config)  # type: ignore[arg-type]
    agent = tmp_path / "agents" / "a"
    for sub in ("config", "state", "run"):
        assert (agent / sub).is_dir()
    cfg = agent / "config" / CONFIG_FILE
    applied = tmp_path / "applied" / "a" / CONFIG_FILE
    assert cfg.read_text() == config.to_json()
    assert applied.read_text() == config.to_json()
    assert p.load_applied("a") == config  # type: ignore[arg-type]


def test_create_agent_keeps_existing_config(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    cfg_dir = tmp_path / "agents" / "a" / "config"
    cfg_dir.mkdir(parents=True)
    existing = AgentConfig(allowed_recipients=("operator",))
    (cfg_dir / CONFIG_FILE).write_text(existing.to_json())

    p.create_agent("a", AgentConfig(driver="builtin"))  # type: ignore[arg-type]

    assert (cfg_dir / CONFIG_FILE).read_text() == existing.to_json()
    assert p.load_applied("a") == existing  # type: ignore[arg-type]
    assert (tmp_path / "agents" / "a" / "state").is_dir()


def test_create_agent_keeps_existing_applied(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    p.create_agent("a", AgentConfig(allowed_recipients=("b",)))  # type: ignore[arg-type]
    # The operator edits the config; the container still runs with the applied copy.
    (tmp_path / "agents" / "a" / "config" / CONFIG_FILE).write_text(AgentConfig().to_json())
    p.create_agent("a", AgentConfig(driver="builtin"))  # type: ignore[arg-type]
    assert p.load_applied("a") == AgentConfig(allowed_recipients=("b",))  # type: ignore[arg-type]
    assert AgentConfig.from_json((tmp_path / "agents" / "a" / "config" / CONFIG_FILE).read_text()) == AgentConfig()


def test_create_agent_twice_is_harmless(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    cfg = AgentConfig(driver="builtin")
    p.create_agent("a", cfg)  # type: ignore[arg-type]
    (tmp_path / "agents" / "a" / "state" / "notes").write_text("kept")
    p.create_agent("a", cfg)  # type: ignore[arg-type]
    assert (tmp_path / "agents" / "a" / "state" / "notes").read_text() == "kept"
    assert p.load_applied("a") == cfg  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["../x", "A", "", "a/b", ".."])
def test_create_agent_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(BadName):
        StatePaths(tmp_path).create_agent(name, AgentConfig())  # type: ignore[arg-type]
    assert not (tmp_path / "agents").exists() or not any((tmp_path / "agents").iterdir())
    assert not (tmp_path / "x").exists()


def test_load_applied_missing_is_default(tmp_path: Path) -> None:
    assert StatePaths(tmp_path).load_applied("a") == AgentConfig()  # type: ignore[arg-type]


def test_load_applied_bad_file_names_it(tmp_path: Path) -> None:
    p = StatePaths(tmp_path)
    p.create_agent("a", AgentConfig())  # type: ignore[arg-type]
    f = tmp_path / "applied" / "a" / CONFIG_FILE
    f.write_text('{"driver": "nope"}')
    with pytest.raises(BadRequest) as exc:
        p.load_applied("a")  # type: ignore[arg-type]
    assert str(f.resolve()) in exc.value.message


def test_a_revived_agents_linked_config_is_not_copied_into_its_applied_dir(tmp_path: Path) -> None:
    """On revive the kept agent.json is carried into applied/ (readable in the
    sandbox): read without following a link, and only when it parses."""
    from hyperhive.names import AgentName

    p = StatePaths(tmp_path / "state")
    a = AgentName("a")
    p.config_dir(a).mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text('{"driver": "claude"}\n')  # valid JSON, but a host file
    (p.config_dir(a) / "agent.json").symlink_to(secret)
    p.create_agent(a, AgentConfig())
    assert (p.applied(a) / "agent.json").read_text() == AgentConfig().to_json()
    assert not (p.applied(a) / "agent.json").is_symlink()


@pytest.mark.parametrize(("text", "repo", "permissions"), [
    ('{"repo": "/srv/project", "permissions": "ask"}', "/srv/project", "ask"),
    ('{"permissions": "sandbox"}', None, "sandbox"),
    ('{"permissions": "allowlist"}', None, "allowlist"),
    ("{}", None, None),
])
def test_agent_json_repo_and_permissions(text: str, repo: str | None, permissions: str | None) -> None:
    c = AgentConfig.from_json(text)
    assert (c.repo, c.permissions) == (repo, permissions)
    assert AgentConfig.from_json(c.to_json()) == c


@pytest.mark.parametrize("text", [
    '{"repo": "relative/path"}', '{"repo": "/a/../b"}', '{"repo": "/a\\u0000b"}', '{"repo": "/a\\nb"}',
    '{"repo": 3}', '{"repo": ""}', '{"permissions": "yes"}', '{"permissions": null, "repo": ["/a"]}',
])
def test_agent_json_bad_repo_or_permissions_are_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        AgentConfig.from_json(text)
