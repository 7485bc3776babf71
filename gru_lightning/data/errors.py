"""The data's two errors, in a module of their own that imports nothing of the package:
sources, checks, the cache and the data module all raise them."""


class DatasetUnavailableError(RuntimeError):
    """The data could not be loaded from the configured source."""


class DataError(ValueError):
    """The data loaded, but its content cannot be trained on as it is (labels, texts)."""
