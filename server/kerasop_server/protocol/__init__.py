"""The two wire formats the server speaks: TF Serving REST (v1) and the Open
Inference Protocol (v2). Pure functions: parsed JSON in, numpy batches out,
and back; nothing here does I/O."""
