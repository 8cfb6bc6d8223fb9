"""`python -m pgov3d_core.data.synthetic`: the synthetic-scene CLI (`output.main`)."""

from pgov3d_core.data.synthetic.output import main

raise SystemExit(main())
