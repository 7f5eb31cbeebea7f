from plainsail.cli import main

raise SystemExit(main())
