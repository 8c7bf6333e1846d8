"""Files in and out: atomic outputs (``atomic``) and lazy dataset readers (``sources``)."""
