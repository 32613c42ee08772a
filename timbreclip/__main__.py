from timbreclip.cli import main

raise SystemExit(main())
