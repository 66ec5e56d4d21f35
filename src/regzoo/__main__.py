"""``python -m regzoo`` is the ``regzoo`` command (so ``torchrun -m regzoo ...`` works)."""

from regzoo.cli import main

raise SystemExit(main())
