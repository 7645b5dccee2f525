"""preprocess: one page -> one clean interleaved document, and judging it. Main-content
extraction, node/paragraph/document filters, dedup keys, PII redaction and the M3W sequence
text. Pure functions over plain records: no Beam, no Ray, no torch."""

from flamboyance.preprocess.dedup import (  # noqa: E402,F401
    content_hash,
    domain_of,
    image_set_key,
    jaccard_estimate,
    lsh_band_keys,
    minhash_signature,
    normalize_url,
    paragraph_key,
)
from flamboyance.preprocess.extract import ExtractConfig, ExtractionError, extract_document  # noqa: E402,F401
from flamboyance.preprocess.filters import (  # noqa: E402,F401
    DocumentStats,
    FilterConfig,
    apply_filters,
    document_filters,
    document_scores,
    document_stats,
    downloaded_image_filter,
    image_filters,
    is_single_colour,
    paragraph_filters,
)
from flamboyance.preprocess.language import detect_language  # noqa: E402,F401
from flamboyance.preprocess.pii import redact_document, redact_pii  # noqa: E402,F401
from flamboyance.preprocess.sequence import image_text_sequence, split_sequence, to_sequence  # noqa: E402,F401
from flamboyance.preprocess.steps import Filter, run_filters  # noqa: E402,F401
