"""Work that runs as Ray Jobs: the runner base (``runner``), fine-tuning and batch-prediction
runners the operator drives, and the batch job's entry point (``batch_job``)."""
