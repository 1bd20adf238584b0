"""fedloom: a federated learning research toolkit.

Algorithms are two pure halves over explicit state (a client update and a server step); engines decide
how to run them. See docs/architecture.md.
"""

__version__ = "0.1.0"
