from mammo.glam.run import main

raise SystemExit(main())
