from sqlserver_sim.cli import main

raise SystemExit(main())
