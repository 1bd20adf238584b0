"""Tasks define the per-sample training loss and the evaluation metrics for a kind of data.

Classification now; next-token language modelling (FedKSeed) and regression register their own task.
"""

from fedloom.tasks.base import TASKS, Task
from fedloom.tasks import classification  # noqa: F401  (registration)
from fedloom.tasks import instruction  # noqa: F401  (registration)

__all__ = ["TASKS", "Task"]
