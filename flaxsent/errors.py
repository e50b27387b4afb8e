"""User-facing error types: the CLI prints these as one line, never as a traceback."""


class FlaxsentError(Exception):
    """Base class of every error a user can cause (bad path, bad file, bad option)."""


class ConfigError(FlaxsentError, ValueError):
    """A config.json that is not a DistilBERT config flaxsent can run."""


class CheckpointError(FlaxsentError):
    """A checkpoint folder, Hub id or weight file that cannot be read or converted."""
