"""Scale-out engines: Apache Beam RunInference and Ray Data, over one row scorer."""
