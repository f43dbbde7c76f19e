"""vista2d plugin: runtimes (eager, AMP, TensorRT, torch.compile) that wrap a model for speed."""
