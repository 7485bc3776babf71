"""Runtime machinery, apart from the model and the data: compiled CPU kernels (the fused
GRU, word ids), CPU thread control, memory trimming, and what a run does on faults."""
