"""Builders: a config in, the parts of a run out (job: readers, sharded module, optimizer;
model: the train module before sharding; train_wrapper: model + objective, batch in, loss out)."""
