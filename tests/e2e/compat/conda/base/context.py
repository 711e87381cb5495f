class _Context:
    subdir = "linux-64"


context = _Context()
