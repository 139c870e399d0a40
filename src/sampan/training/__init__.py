"""Training, evaluation and prediction over datasets."""
