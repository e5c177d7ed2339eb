"""``python -m segcore``: see :mod:`segcore.cli`.

TensorFlow's start-up noise is kept off stderr first (:mod:`segcore.cli.quiet`;
``SEGCORE_DEBUG=1`` keeps it).
"""

from segcore.cli import main
from segcore.cli.quiet import quiet_tensorflow

quiet_tensorflow()
raise SystemExit(main())
