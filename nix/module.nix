# services.hyperhive: the host daemon as a systemd service (F38, F39).
#
# `hive serve` runs as root (it drives nixos-container, machinectl, systemctl
# set-property for each container's limits, and journalctl -M), with
# Type=notify: it sends READY=1 once its sockets are bound and its containers
# booted, and WATCHDOG=1 at half of WatchdogSec from its event loop, so a
# wedged daemon is restarted. It logs JSON lines to journald.
#
# Restarts hand the agents over (issue 16): `systemctl reload` (ExecReload)
# sends SIGUSR2, on which the daemon stops without stopping any agent and
# exits 75; RestartForceExitStatus brings it back at once (with the unit's
# new ExecStart after an upgrade), and the new daemon adopts every container
# still running. reloadIfChanged makes `nixos-rebuild switch` take that path
# instead of a stop and start. A crash or a watchdog kill leaves the agents
# running too: the containers are systemd units of their own, and
# KillMode=process keeps anything else the daemon started (the local
# backend's harnesses and log relays) out of systemd's kill. `systemctl stop`
# still stops the agents: the daemon does it on SIGTERM, keeping their
# desired state for the next start.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.hyperhive;
  inherit (lib) mkEnableOption mkIf mkOption optionalAttrs types escapeShellArgs;

  serveArgs = [
    "--state-dir" cfg.stateDir
    "serve"
    "--listen" cfg.listen
    "--backend" "nixos"
    "--driver" cfg.agents.driver
    "--recv-default-seconds" (toString cfg.agents.recvDefaultSeconds)
    "--recv-cap-seconds" (toString cfg.agents.recvCapSeconds)
    "--restart-backoff-seconds" (toString cfg.agents.restartBackoffSeconds)
    "--restart-backoff-max-seconds" (toString cfg.agents.restartBackoffMaxSeconds)
    "--agent-memory-mb" (toString cfg.agents.memoryMB)
    "--agent-pids" (toString cfg.agents.pids)
  ] ++ (if cfg.agentsDir != null then [ "--agents-dir" cfg.agentsDir ] else [ ]) ++ cfg.extraArgs;
in
{
  options.services.hyperhive = {
    enable = mkEnableOption "the hyperhive host daemon";

    package = mkOption {
      type = types.package;
      description = "The hyperhive package (`hive`).";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/hyperhive";
      description = "State dir: hive.sqlite, agents/<name>/, applied/<name>/, run/admin.sock.";
    };

    agentsDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = ''
        Where every agent's own dir is (<agentsDir>/<name>/: its home, workspace,
        sockets), e.g. on another filesystem than stateDir's, so an agent that
        fills its disk does not fill hive.sqlite's. The unit waits for its mount.
        Once agents live there the daemon refuses to start with another.
        null: <stateDir>/agents.
      '';
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1:7800";
      description = "Dashboard address HOST:PORT. Any non-loopback address needs tokenFile.";
    };

    tokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = ''
        File holding the operator token for the dashboard. Handed to the
        service as a systemd credential; the daemon finds its path in
        HYPERHIVE_TOKEN_FILE.
      '';
    };

    flakeRef = mkOption {
      type = types.str;
      description = "Flake reference of hyperhive's nix/ flake, the input of every generated agent flake.";
    };

    watchdogSec = mkOption {
      type = types.ints.positive;
      default = 30;
      description = "systemd WatchdogSec; the daemon pings at half of it.";
    };

    agents = {
      driver = mkOption {
        type = types.enum [ "builtin" "claude" ];
        default = "builtin";
        description = "Model driver of new agents.";
      };
      recvDefaultSeconds = mkOption {
        type = types.number;
        default = 30;
        description = "recv wait when the caller gives none.";
      };
      recvCapSeconds = mkOption {
        type = types.number;
        default = 180;
        description = "Longest recv wait an agent may ask for.";
      };
      restartBackoffSeconds = mkOption {
        type = types.number;
        default = 1;
        description = "First delay before restarting a crashed container.";
      };
      restartBackoffMaxSeconds = mkOption {
        type = types.number;
        default = 30;
        description = "Longest delay between crash restarts.";
      };
      memoryMB = mkOption {
        type = types.ints.positive;
        default = 4096;
        description = ''
          MemoryMax of each agent's container (container@<c>.service), in MB,
          where its agent.json sets none ("limits": {"memory_mb": N}).
        '';
      };
      pids = mkOption {
        type = types.ints.positive;
        default = 512;
        description = ''
          TasksMax of each agent's container, where its agent.json sets none
          ("limits": {"pids": N}).
        '';
      };
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "More `hive serve` flags.";
    };
  };

  config = mkIf cfg.enable {
    boot.enableContainers = true;
    # nixos-container create/update --flake build the agents' flakes.
    nix.settings.experimental-features = [ "nix-command" "flakes" ];
    environment.systemPackages = [ cfg.package ]; # the `hive` CLI for the operator

    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0750 root root - -" ];

    systemd.services.hyperhive = {
      description = "hyperhive host daemon";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      reloadIfChanged = true; # an upgrade is a handover: the agents keep running
      unitConfig = optionalAttrs (cfg.agentsDir != null) { RequiresMountsFor = [ cfg.agentsDir ]; };

      path = [ pkgs.nixos-container config.nix.package config.systemd.package pkgs.git ];
      environment = {
        HYPERHIVE_FLAKE = cfg.flakeRef;
        HYPERHIVE_AGENT_TEMPLATE = "${./agent.nix}";
        PYTHONUNBUFFERED = "1";
      } // optionalAttrs (cfg.tokenFile != null) {
        HYPERHIVE_TOKEN_FILE = "%d/token";
      };
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        ExecStart = "${cfg.package}/bin/hive ${escapeShellArgs serveArgs}";
        # Hand the agents over to a new daemon: stop keeping them, exit 75, be started again.
        ExecReload = "${pkgs.coreutils}/bin/kill -USR2 $MAINPID";
        RestartForceExitStatus = "75";
        SuccessExitStatus = "75";
        KillMode = "process";
        WatchdogSec = cfg.watchdogSec;
        Restart = "on-failure";
        RestartSec = 2;
        User = "root";
        WorkingDirectory = cfg.stateDir;
        # Stopping the daemon stops every container first (one `nixos-container
        # stop` each), which can take a while with many agents.
        TimeoutStopSec = "5min";
      } // optionalAttrs (cfg.tokenFile != null) {
        LoadCredential = "token:${cfg.tokenFile}";
      };
    };
  };
}
