"""Dataset readers and splitting shared by the tasks."""
