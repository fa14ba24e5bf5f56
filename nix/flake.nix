# hyperhive's flake. Reference it with its dir, e.g.
#   inputs.hyperhive.url = "git+https://example.org/hyperhive?dir=nix";
# so that `self.sourceInfo` is the whole source tree (the package builds from it).
{
  description = "hyperhive: a host daemon for a swarm of AI coding agents, one NixOS container each";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.default;
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.callPackage ./package.nix { src = self.sourceInfo.outPath; };
      });

      # The host: `services.hyperhive` (module.nix).
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./module.nix ];
        services.hyperhive.package = lib.mkDefault (packageFor pkgs);
        services.hyperhive.flakeRef = lib.mkDefault "path:${self.sourceInfo.outPath}?dir=nix";
      };

      # Every agent container: imported by the generated applied/<name>/flake.nix.
      nixosModules.harnessBase = { lib, pkgs, ... }: {
        imports = [ ./harness-base.nix ];
        hyperhive.harness.package = lib.mkDefault (packageFor pkgs);
      };
    };
}
