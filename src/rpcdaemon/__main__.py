from rpcdaemon.cli import main

raise SystemExit(main())
