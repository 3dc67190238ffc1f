from lumasched.cli import main

raise SystemExit(main())
