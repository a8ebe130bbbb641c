"""All writes. Every function here checks who is asking, changes the database inside one
transaction, and emits the matching events once it commits."""
