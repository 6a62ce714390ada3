"""When aseguide started being imported (imported first by ``aseguide/__init__.py``).

The command line counts the time it prints from :data:`STARTED`, so that the import
of torch and MatterGen is included.
"""

import time

#: ``time.perf_counter()`` at the start of ``import aseguide``.
STARTED = time.perf_counter()
