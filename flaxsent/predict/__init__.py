"""`flaxsent predict`: a file of texts in, one record per row out; resumable, shardable."""
