"""Everything that knows about processes: the process group (process), sharding with
TorchRec's planner and DistributedModelParallel (sharding), the optimizers (optimizers), the
collectives evaluation needs (collectives) and the batch loop, plain or TorchRec's pipeline
(batch_runner). Model and objective code never import torch.distributed; these modules do."""
