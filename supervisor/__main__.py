from supervisor.cli.entry import main

raise SystemExit(main())
