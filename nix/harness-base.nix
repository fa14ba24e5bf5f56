# The base of every agent container: the harness service, git, PATH.
#
# The harness unit is hive-m1nd.service for the manager and hive-ag3nt.service
# for any other agent. When it ends, for any reason, the container powers off:
# a container is up exactly while its harness is, and the host daemon (which
# watches the machine) treats a disappearance it did not ask for as a crash and
# restarts the container with backoff. Before it ends, the unit records how
# (`$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS`) in <stateDir>/harness.exit, where
# the host reads the exit status. OOMPolicy=stop: an OOM kill of the harness or
# of anything it runs (the container's MemoryMax, set by the host) ends it, the
# record says `oom-kill`, and the host reports "out of memory".
#
# The container's network is its own, with loopback alone. What the host hands
# in is bound at these dirs: socketDir (read-only) holds the daemon's sockets,
# hive.sock (the agent's own), api.sock (the model-API gateway, which adds the
# credential) and proxy.sock (the egress proxy, with this agent's allowlist);
# the harness relays the last two on 127.0.0.1:8787 and :3128 inside
# (--bridge-ports fixed) and points ANTHROPIC_BASE_URL / HTTP(S)_PROXY at them.
# stateDir (the agent's home) and workspaceDir are read-write; the web UI is the
# unix socket <stateDir>/web.sock, which the daemon relays from the agent's port.
# No credential is in the unit's environment: there is none to give.
{ config, lib, pkgs, ... }:

let
  cfg = config.hyperhive.harness;
  inherit (lib) mkDefault mkIf mkOption types escapeShellArgs;

  exitRecord = "${cfg.stateDir}/harness.exit";
  recordExit = pkgs.writeShellScript "hive-record-exit" ''
    echo "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" > ${lib.escapeShellArg exitRecord}
  '';

  harnessUnit = {
    description = "hyperhive ${cfg.role} harness (${cfg.name})";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    # Packages an agent adds in its agent.nix reach the harness without a
    # harness change.
    path = [ "/run/current-system/sw" ];
    environment = {
      HOME = cfg.stateDir;
      PYTHONUNBUFFERED = "1";
    };
    # A rebuild restarts the whole container (nixos-container restart); a
    # switch restarting only this unit would power the container off mid-switch.
    restartIfChanged = false;
    unitConfig = {
      SuccessAction = "poweroff";
      FailureAction = "poweroff";
    };
    serviceConfig = {
      Type = "simple";
      ExecStartPre = "${pkgs.coreutils}/bin/rm -f ${lib.escapeShellArg exitRecord}";
      ExecStart = "${cfg.package}/bin/hive harness " + escapeShellArgs [
        "--name" cfg.name
        "--socket" "${cfg.socketDir}/hive.sock"
        "--state-dir" cfg.stateDir
        "--driver" cfg.driver
        "--api-socket" "${cfg.socketDir}/api.sock"
        "--proxy-socket" "${cfg.socketDir}/proxy.sock"
        "--bridge-ports" "fixed"
        "--web-socket" "${cfg.stateDir}/web.sock"
        "--workspace" cfg.workspaceDir
        "--applied-dir" cfg.appliedDir
        "--sandboxed"
      ];
      ExecStopPost = "${recordExit}";
      WorkingDirectory = cfg.stateDir;
      Restart = "no";
      OOMPolicy = "stop";
    };
  };
in
{
  options.hyperhive.harness = {
    name = mkOption {
      type = types.strMatching "[a-z][a-z0-9-]{0,30}";
      description = "The agent's name (its identity on the hive).";
    };
    role = mkOption {
      type = types.enum [ "agent" "manager" ];
      default = "agent";
      description = "manager runs hive-m1nd.service, agent runs hive-ag3nt.service.";
    };
    package = mkOption {
      type = types.package;
      description = "The hyperhive package providing `hive`.";
    };
    driver = mkOption {
      type = types.str;
      default = "builtin";
      description = "The model driver of the harness.";
    };
    socketDir = mkOption {
      type = types.str;
      default = "/hive/run";
      description = "Where the host binds the agent's run dir, read-only (hive.sock, api.sock, proxy.sock).";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/hive/state";
      description = "Where the host binds the agent's state dir, its home (notes, session, events, web.sock).";
    };
    workspaceDir = mkOption {
      type = types.str;
      default = "/hive/work";
      description = "Where the host binds the agent's workspace (read-write).";
    };
    appliedDir = mkOption {
      type = types.str;
      default = "/hive/applied";
      description = "Where the host binds the agent's applied config, read-only (agent.json: its tools and permissions).";
    };
  };

  config = {
    boot.isContainer = true;
    networking.useDHCP = false; # a network of its own, loopback alone (the host's conf)
    system.stateVersion = mkDefault "25.05";

    environment.systemPackages = [ cfg.package pkgs.git ];

    # Declarative gitconfig (/etc/gitconfig); the generated flake overrides the user.
    programs.git = {
      enable = true;
      config = {
        user = {
          name = mkDefault "hyperhive agent";
          email = mkDefault "agent@hyperhive.local";
        };
        init.defaultBranch = "main";
      };
    };

    systemd.services.hive-ag3nt = mkIf (cfg.role == "agent") harnessUnit;
    systemd.services.hive-m1nd = mkIf (cfg.role == "manager") harnessUnit;
  };
}
