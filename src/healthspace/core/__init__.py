"""Wire models, enums, errors, encoding and clocks shared by every role — no I/O here."""
