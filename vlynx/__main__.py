from vlynx.cli import main

raise SystemExit(main())
