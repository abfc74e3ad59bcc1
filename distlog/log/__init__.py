"""distlog.log: the storage engine — record batches, segments, indexes, partition logs."""
