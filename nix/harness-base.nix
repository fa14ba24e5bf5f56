# The base of every agent container: the harness service, git, PATH.
#
# The harness unit is hive-m1nd.service for the manager and hive-ag3nt.service
# for any other agent. When it ends, for any reason, the container powers off:
# a container is up exactly while its harness is, and the host daemon (which
# watches the machine) treats a disappearance it did not ask for as a crash and
# restarts the container with backoff. Before it ends, the unit records how
# (`$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS`) in <stateDir>/harness.exit, where
# the host reads the exit status.
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
      ];
      ExecStopPost = "${recordExit}";
      WorkingDirectory = cfg.stateDir;
      Restart = "no";
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
      description = "Where the host binds the agent's socket dir (hive.sock).";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/hive/state";
      description = "Where the host binds the agent's state dir (notes, credentials, events).";
    };
  };

  config = {
    boot.isContainer = true;
    networking.useDHCP = false; # the container shares the host's network
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
