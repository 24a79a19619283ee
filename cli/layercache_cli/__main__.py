from layercache_cli.main import main

raise SystemExit(main())
