"""preprocess: one page -> one clean interleaved document, and judging it. Main-content
extraction, node/paragraph/document filters, dedup keys, PII redaction and the M3W sequence
text. Pure functions over plain records: no Beam, no Ray, no torch."""
