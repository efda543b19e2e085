from geospatial_pipeline.cli import main

raise SystemExit(main())
