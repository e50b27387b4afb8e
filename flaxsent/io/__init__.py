"""Files: durable writes, readers, writers, run records. Imports nothing of flaxsent but errors."""
