# A stand-in for conda, which is not on PyPI: conda-store-server's schema module imports
# conda.base.context at import time and reads only the platform from it.
