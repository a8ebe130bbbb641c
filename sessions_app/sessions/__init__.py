"""Sessions and their members: creating, renaming, inviting, leaving, and the reads of them."""
