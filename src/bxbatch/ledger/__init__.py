"""The `bxbatch` schema in the target database: its tables and every read and write of them."""
