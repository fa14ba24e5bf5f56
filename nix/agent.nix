# This agent's own NixOS settings: the packages and services of its container.
# The manager proposes changes to this file, the operator approves them, and a
# rebuild applies them. The hive's part (harness, git identity, mounts) lives in
# the generated flake.nix next to this file and in the hive's harness-base.nix.
{ config, lib, pkgs, ... }:

{
  # Tools on the harness's PATH (it reads /run/current-system/sw).
  environment.systemPackages = with pkgs; [
    coreutils
    gnugrep
    gnused
    findutils
  ];
}
