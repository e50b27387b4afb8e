"""`flaxsent aot`: ahead-of-time compiles for TPU slices with libtpu, reports and rooflines."""
