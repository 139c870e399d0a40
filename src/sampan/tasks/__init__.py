"""Built-in tasks. Importing this package registers them."""

from sampan.tasks import (  # noqa: F401  (importing registers them)
    image_classification,
    text_classification,
    text_embedding,
    ts_anomaly,
    ts_forecast,
)
from sampan.tasks.base import TASKS, Listing, Samples, Task, get_task

__all__ = ["TASKS", "Listing", "Samples", "Task", "get_task"]
