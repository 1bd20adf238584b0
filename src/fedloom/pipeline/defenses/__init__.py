"""Robust aggregation rules against Byzantine and backdoor attacks, registered as aggregators
(``--aggregator flame``, options ``--flame.noise-lambda``); importing the package registers them. See
docs/trust-defenses.md."""

from fedloom.pipeline.defenses import (clipping, flame, fltrust, foolsgold, geomed, krum, oracle, rlr,  # noqa: F401
                                       snowball)
