"""Built-in tasks. Importing this package registers them."""

from sampan.tasks import image_classification, text_classification, text_embedding  # noqa: F401
from sampan.tasks.base import TASKS, Listing, Samples, Task, get_task

__all__ = ["TASKS", "Listing", "Samples", "Task", "get_task"]
