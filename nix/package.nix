# The hyperhive Python package (`hive`), built from the source tree.
{ lib, python3Packages, src }:

python3Packages.buildPythonApplication {
  pname = "hyperhive";
  version = "0.1.0";
  inherit src;
  pyproject = true;

  build-system = [ python3Packages.setuptools python3Packages.wheel ];
  dependencies = with python3Packages; [ pykka tornado peewee mcp structlog prometheus-client cryptography ];

  # The suite runs real daemons, sockets and bubblewrap: CI runs it (.ci/run),
  # not the build sandbox.
  doCheck = false;

  meta = {
    description = "Host daemon for a swarm of AI coding agents, one container per agent";
    license = lib.licenses.mit;
    mainProgram = "hive";
  };
}
