"""The lean runtime shipped in every function image. Imports nothing heavy at module scope."""
