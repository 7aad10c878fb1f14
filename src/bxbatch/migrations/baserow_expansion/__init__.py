"""The Baserow schema expansion of the guide: bxbatch's first and default migration."""
