"""PII redaction: e-mails, public vs private IPs; language detection."""

from flamboyance.preprocess.document import Document, ImageNode, TextNode, VideoNode
from flamboyance.preprocess.language import detect_language
from flamboyance.preprocess.pii import EMAIL_PLACEHOLDER, IP_PLACEHOLDER, redact_document, redact_pii


def test_emails_redacted():
    assert redact_pii("Write to bob.smith+news@mail.example.co.uk today.") == "Write to [EMAIL] today."
    assert redact_pii("a@b.io,c_d@e-f.org") == "[EMAIL],[EMAIL]"
    assert EMAIL_PLACEHOLDER == "[EMAIL]"


def test_not_emails_untouched():
    for text in ["email me @ home", "user@localhost", "price: 5@3 each", "@handle on social"]:
        assert redact_pii(text) == text


def test_public_ipv4_redacted_with_punctuation_kept():
    assert redact_pii("Our server 8.8.8.8. Backup: 93.184.216.34;") == "Our server [IP]. Backup: [IP];"
    assert IP_PLACEHOLDER == "[IP]"


def test_private_loopback_linklocal_ipv4_untouched():
    text = "Router 192.168.1.1, host 10.0.0.7, loopback 127.0.0.1, metadata 169.254.169.254, any 0.0.0.0"
    assert redact_pii(text) == text


def test_invalid_ip_like_strings_untouched():
    text = "Version 1.2.3.400, build 1.2.3.4.5, time 12:30:45 and 999.1.1.1"
    assert redact_pii(text) == text


def test_ipv6():
    assert redact_pii("DNS 2001:4860:4860::8888 and 2606:4700:4700::1111.") == "DNS [IP] and [IP]."
    assert redact_pii("mapped ::ffff:8.8.8.8") == "mapped [IP]"
    text = "local ::1, fe80::1, fd00::5, ::ffff:10.0.0.1 and std::vector"
    assert redact_pii(text) == text


def test_redact_document():
    doc = Document(url="https://example.com/p", title="Contact ann@example.com", language="en",
                   metadata={"k": 1}, nodes=[
                       TextNode(text="Mail ann@example.com from 8.8.4.4", kind="quote"),
                       ImageNode(url="https://example.com/a.jpg", alt="by ann@example.com", caption="8.8.8.8",
                                 width=10, height=20),
                       VideoNode(sources=("https://example.com/v.mp4",), caption="call 1.1.1.1"),
                   ])
    out = redact_document(doc)
    assert out.title == "Contact [EMAIL]"
    assert out.nodes == [
        TextNode(text="Mail [EMAIL] from [IP]", kind="quote"),
        ImageNode(url="https://example.com/a.jpg", alt="by [EMAIL]", caption="[IP]", width=10, height=20),
        VideoNode(sources=("https://example.com/v.mp4",), caption="call [IP]"),
    ]
    assert out.metadata == {"k": 1} and out.language == "en" and out.url == doc.url
    assert doc.nodes[0].text == "Mail ann@example.com from 8.8.4.4"  # input untouched


def test_detect_language():
    lang, prob = detect_language("The quick brown fox jumps over the lazy dog near the river bank.")
    assert lang == "en" and prob > 0.99
    lang, prob = detect_language("Der schnelle braune Fuchs springt über den faulen Hund am Flussufer.")
    assert lang == "de" and prob > 0.9
    assert detect_language("12345 !!! 678") == ("und", 0.0)
