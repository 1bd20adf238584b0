"""Error types. The CLI turns any FedloomError into one line on stderr and a non-zero exit."""


class FedloomError(Exception):
    """Base class for errors caused by user input or environment, reported without a traceback."""


class ConfigError(FedloomError):
    """Invalid configuration value, unknown name or inconsistent options."""


class DataError(FedloomError):
    """Missing or malformed dataset files, or a partition that cannot satisfy its constraints."""


class TrainingError(FedloomError):
    """Training diverged (non-finite loss) or otherwise cannot continue."""


class DivergenceError(TrainingError):
    """Training diverged: a non-finite loss or non-finite global parameters. With ``--on-divergence record`` the
    run ends there as its outcome (an attack can achieve exactly this) instead of failing."""
