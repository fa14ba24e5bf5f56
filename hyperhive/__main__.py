import sys

if sys.argv[1:2] == ["mcp"]:  # the pipe a turn starts: the standard library only (issue 17)
    from hyperhive.mcp_pipe import main as pipe

    raise SystemExit(pipe(sys.argv[1:]))

from hyperhive.cli import main  # noqa: E402 - after the pipe's early exit

raise SystemExit(main())
