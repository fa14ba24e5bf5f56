from hyperhive.cli import main

raise SystemExit(main())
