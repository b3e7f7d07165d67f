from lm.cli import main

raise SystemExit(main())
