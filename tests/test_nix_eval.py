"""The nix files evaluated for real (`nix-instantiate --eval`), with a small
stand-in for nixpkgs' `lib` and `pkgs` (nixpkgs is not available here): the
flags the NixOS module and the harness base pass to `hive` are parsed by
hive's own CLI parser, so a renamed flag fails here, not on a NixOS host."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hyperhive import settings
from hyperhive.backends.nix_flake import (
    CONTAINER_APPLIED,
    CONTAINER_RUN,
    CONTAINER_STATE,
    CONTAINER_WORK,
    AgentFlake,
    agent_flake,
)
from hyperhive.cli import _parser
from hyperhive.names import AgentName

NIX_DIR = Path(__file__).resolve().parents[1] / "nix"
# In nix-instantiate's environment while the harness base is evaluated: a file
# that read the environment (builtins.getEnv) would carry them into the unit.
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-FAKE-eval-1", "ANTHROPIC_AUTH_TOKEN": "FAKE-eval-2",
           "CLAUDE_CODE_OAUTH_TOKEN": "FAKE-eval-3", "GITHUB_TOKEN": "ghp_FAKEeval4",
           "AWS_SECRET_ACCESS_KEY": "FAKE-eval-5"}

pytestmark = [
    pytest.mark.e2e,  # the real nix-instantiate
    pytest.mark.skipif(
        shutil.which("nix-instantiate") is None,
        reason="nix-instantiate is absent: apt-get install nix-bin (.ci/run does)",
    ),
]

# Only what module.nix and harness-base.nix use, with the same meaning for the
# values they produce (options are returned as declared, mkIf false is marked).
STUB = """
rec {
  lib = rec {
    mkOption = o: o;
    mkEnableOption = d: { type = "bool"; description = d; };
    mkDefault = v: v;
    mkForce = v: v;
    mkIf = c: v: if c then v else { _mkIfFalse = true; };
    optionalAttrs = c: a: if c then a else { };
    escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\\\''" ] (toString s) + "'";
    escapeShellArgs = l: builtins.concatStringsSep " " (map escapeShellArg l);
    types = {
      str = "str"; path = "path"; package = "package"; number = "number"; bool = "bool";
      nullOr = t: "nullOr"; listOf = t: "listOf"; enum = l: "enum"; strMatching = r: "strMatching";
      ints = { positive = "positive"; };
    };
  };
  pkgs = {
    writeShellScript = name: text: "/nix/store/${name}#" + text;  # the script's text kept visible
    coreutils = "/nix/store/coreutils"; git = "/nix/store/git";
    nixos-container = "/nix/store/nixos-container";
  };
}
"""


def nix_eval(tmp_path: Path, expr: str, env: dict[str, str] | None = None) -> Any:
    (tmp_path / "stub.nix").write_text(STUB)
    r = subprocess.run(
        ["nix-instantiate", "--store", "dummy://", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, **(env or {})},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def host_module(tmp_path: Path, token: str = "null", agents_dir: str = "null") -> Any:
    return nix_eval(tmp_path, f"""
      let s = import ./stub.nix;
          m = import {NIX_DIR}/module.nix {{ inherit (s) lib pkgs; config = {{
            services.hyperhive = {{ enable = true; package = "/nix/store/pkg"; stateDir = "/var/lib/hyperhive";
              listen = "127.0.0.1:7800"; tokenFile = {token}; flakeRef = "path:/src?dir=nix"; watchdogSec = 30;
              agentsDir = {agents_dir};
              agents = {{ driver = "builtin"; recvDefaultSeconds = 30; recvCapSeconds = 180;
                          restartBackoffSeconds = 1; restartBackoffMaxSeconds = 30; memoryMB = 2048; pids = 256; }};
              extraArgs = [ "--sandbox" "off" ]; }};
            nix.package = "/nix/store/nix"; systemd.package = "/nix/store/systemd"; }}; }};
      in {{ inherit (m) options config; }}""")


def test_host_module_runs_hive_serve_as_a_notify_service_with_a_watchdog(tmp_path: Path) -> None:
    m = host_module(tmp_path)
    opts = m["options"]["services"]["hyperhive"]
    assert opts["stateDir"]["default"] == "/var/lib/hyperhive"
    assert set(opts) >= {"enable", "package", "stateDir", "listen", "tokenFile", "agents"}
    unit = m["config"]["systemd"]["services"]["hyperhive"]
    sc = unit["serviceConfig"]
    assert (sc["Type"], sc["Restart"], sc["User"], sc["WatchdogSec"]) == ("notify", "on-failure", "root", 30)
    assert "/nix/store/nixos-container" in unit["path"]
    assert unit["environment"]["HYPERHIVE_FLAKE"] == "path:/src?dir=nix"
    assert unit["environment"]["HYPERHIVE_AGENT_TEMPLATE"].endswith("-agent.nix")
    assert "LoadCredential" not in sc and "HYPERHIVE_TOKEN_FILE" not in unit["environment"]

    exe, *args = shlex.split(sc["ExecStart"])
    assert exe == "/nix/store/pkg/bin/hive"
    ns = _parser().parse_args(args)  # every flag the module passes exists in `hive serve`
    s = settings.from_args(ns)
    assert (ns.cmd, str(s.state_dir), s.backend, s.listen, s.sandbox) == (
        "serve", "/var/lib/hyperhive", "nixos", "127.0.0.1:7800", "off")
    assert (s.agent_memory_mb, s.agent_pids) == (2048, 256)  # the containers' default limits
    assert (opts["agents"]["memoryMB"]["default"], opts["agents"]["pids"]["default"]) == (4096, 512)


def test_host_module_restarts_hand_the_agents_over(tmp_path: Path) -> None:
    """issue 16: reload = SIGUSR2 (the daemon leaves its agents running and exits
    EXIT_HANDED_OVER), which systemd restarts on; an upgrade reloads; systemd kills
    only the daemon itself."""
    from hyperhive.daemon import EXIT_HANDED_OVER

    unit = host_module(tmp_path)["config"]["systemd"]["services"]["hyperhive"]
    sc = unit["serviceConfig"]
    assert shlex.split(sc["ExecReload"]) == ["/nix/store/coreutils/bin/kill", "-USR2", "$MAINPID"]
    assert sc["RestartForceExitStatus"] == sc["SuccessExitStatus"] == str(EXIT_HANDED_OVER)
    assert sc["KillMode"] == "process" and unit["reloadIfChanged"] is True
    assert "--keep-agents" not in sc["ExecStart"]  # a stop still stops the agents


def test_host_module_hands_the_token_file_over_as_a_credential(tmp_path: Path) -> None:
    unit = host_module(tmp_path, token='"/run/keys/hive-token"')["config"]["systemd"]["services"]["hyperhive"]
    assert unit["serviceConfig"]["LoadCredential"] == "token:/run/keys/hive-token"
    assert unit["environment"]["HYPERHIVE_TOKEN_FILE"] == "%d/token"


def test_host_module_passes_the_agents_dir_and_waits_for_its_mount(tmp_path: Path) -> None:
    none = host_module(tmp_path)["config"]["systemd"]["services"]["hyperhive"]
    assert "--agents-dir" not in none["serviceConfig"]["ExecStart"] and none["unitConfig"] == {}
    unit = host_module(tmp_path, agents_dir='"/srv/agents"')["config"]["systemd"]["services"]["hyperhive"]
    assert settings.from_args(_parser().parse_args(shlex.split(unit["serviceConfig"]["ExecStart"])[1:])
                              ).agents_dir == "/srv/agents"
    assert unit["unitConfig"]["RequiresMountsFor"] == ["/srv/agents"]


@pytest.mark.parametrize(("role", "unit", "other"), [("agent", "hive-ag3nt", "hive-m1nd"),
                                                      ("manager", "hive-m1nd", "hive-ag3nt")])
def test_harness_base_runs_the_harness_unit_of_its_role(tmp_path: Path, role: str, unit: str, other: str) -> None:
    c = nix_eval(tmp_path, f"""
      let s = import ./stub.nix;
      in (import {NIX_DIR}/harness-base.nix {{ inherit (s) lib pkgs; config.hyperhive.harness = {{
            name = "alice"; role = "{role}"; package = "/nix/store/pkg"; driver = "builtin";
            socketDir = "{CONTAINER_RUN}"; stateDir = "{CONTAINER_STATE}";
            workspaceDir = "{CONTAINER_WORK}"; appliedDir = "{CONTAINER_APPLIED}"; }}; }}).config""", env=SECRETS)
    services = c["systemd"]["services"]
    assert services[other] == {"_mkIfFalse": True}
    u = services[unit]
    assert u["path"] == ["/run/current-system/sw"]
    assert u["unitConfig"] == {"SuccessAction": "poweroff", "FailureAction": "poweroff"}
    assert u["restartIfChanged"] is False and u["serviceConfig"]["Restart"] == "no"
    # An OOM kill of anything in the unit ends the harness (and so the container), recorded as oom-kill.
    assert u["serviceConfig"]["OOMPolicy"] == "stop"
    # No credential in the unit: its environment is these two, and nothing read the daemon's.
    assert u["environment"] == {"HOME": "/hive/state", "PYTHONUNBUFFERED": "1"}
    text = json.dumps(c)
    assert not any(secret in text for secret in SECRETS.values())
    stop_post = u["serviceConfig"]["ExecStopPost"]
    assert stop_post.startswith("/nix/store/hive-record-exit#")
    assert """echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" > '/hive/state/harness.exit'""" in stop_post
    exe, *args = shlex.split(u["serviceConfig"]["ExecStart"])
    assert args == [
        "harness", "--name", "alice", "--socket", "/hive/run/hive.sock", "--state-dir", "/hive/state",
        "--driver", "builtin", "--api-socket", "/hive/run/api.sock", "--proxy-socket", "/hive/run/proxy.sock",
        "--bridge-ports", "fixed", "--web-socket", "/hive/state/web.sock", "--workspace", "/hive/work",
        "--applied-dir", "/hive/applied", "--sandboxed"]
    ns = _parser().parse_args(args)  # the flags `hive harness` takes
    assert (exe, ns.cmd, ns.name, ns.socket, ns.agent_state, ns.driver) == (
        "/nix/store/pkg/bin/hive", "harness", "alice", "/hive/run/hive.sock", "/hive/state", "builtin")
    assert (ns.api_socket, ns.proxy_socket, ns.bridge_ports, ns.web_socket, ns.workspace, ns.sandboxed) == (
        "/hive/run/api.sock", "/hive/run/proxy.sock", "fixed", "/hive/state/web.sock", "/hive/work", True)
    assert ns.web_port == 0  # not passed: the web UI is the unix socket
    # Its agent.json (tools, permissions) where the backend binds the applied dir: read, not the default.
    assert ns.applied_dir == CONTAINER_APPLIED
    assert c["programs"]["git"]["enable"] is True
    assert c["programs"]["git"]["config"]["user"]["name"] == "hyperhive agent"


def test_harness_base_defaults_are_where_the_host_binds_the_dirs(tmp_path: Path) -> None:
    opts = nix_eval(tmp_path, f"""
      let s = import ./stub.nix;
      in (import {NIX_DIR}/harness-base.nix {{ inherit (s) lib pkgs; config.hyperhive.harness = {{
            name = "a"; role = "agent"; package = "/p"; driver = "builtin"; socketDir = "/r"; stateDir = "/s";
            workspaceDir = "/w"; appliedDir = "/a"; }}; }}).options.hyperhive.harness""")
    assert {k: opts[k]["default"] for k in ("socketDir", "stateDir", "workspaceDir", "appliedDir")} == {
        "socketDir": CONTAINER_RUN, "stateDir": CONTAINER_STATE, "workspaceDir": CONTAINER_WORK,
        "appliedDir": CONTAINER_APPLIED}


def test_no_nix_file_reads_the_environment() -> None:
    for f in NIX_DIR.glob("*.nix"):
        assert "getEnv" not in f.read_text(), f
    assert "getEnv" not in agent_flake(AgentFlake(AgentName("alice"), "claude", "path:/src?dir=nix"))


def test_generated_flake_builds_the_container_from_the_base_the_agent_nix_and_its_identity(tmp_path: Path) -> None:
    (tmp_path / "flake.nix").write_text(agent_flake(AgentFlake(AgentName("m1nd"), "builtin", "path:/src?dir=nix")))
    out = nix_eval(tmp_path, """
      let s = import ./stub.nix;
          f = import ./flake.nix;
          o = f.outputs { self = { }; hyperhive.nixosModules.harnessBase = "BASE";
                          nixpkgs.lib.nixosSystem = a: a; };
          c = o.nixosConfigurations.container;
      in { inherit (f) inputs; system = c.system; base = builtins.elemAt c.modules 0;
           agentNix = baseNameOf (toString (builtins.elemAt c.modules 1));
           own = (builtins.elemAt c.modules 2) { inherit (s) lib; }; }""")
    assert out["inputs"] == {"hyperhive": {"url": "path:/src?dir=nix"}, "nixpkgs": {"follows": "hyperhive/nixpkgs"}}
    assert (out["system"], out["base"], out["agentNix"]) == ("x86_64-linux", "BASE", "agent.nix")
    own = out["own"]
    assert own["hyperhive"]["harness"] == {"name": "m1nd", "role": "manager", "driver": "builtin",
                                           "socketDir": CONTAINER_RUN, "stateDir": CONTAINER_STATE,
                                           "workspaceDir": CONTAINER_WORK, "appliedDir": CONTAINER_APPLIED}
    assert own["programs"]["git"]["config"]["user"] == {"name": "m1nd", "email": "m1nd@hyperhive.local"}
    assert own["networking"]["hostName"] == "hh-m1nd"


def test_flake_exports_the_host_module_and_the_harness_base(tmp_path: Path) -> None:
    out = nix_eval(tmp_path, f"""
      let f = import {NIX_DIR}/flake.nix;
          o = f.outputs {{ self = {{ sourceInfo.outPath = "/src"; }};
                          nixpkgs = {{ lib.genAttrs = names: fn: {{ }}; legacyPackages = {{ }}; }}; }};
      in builtins.attrNames o.nixosModules""")
    assert out == ["default", "harnessBase"]
