"""Dedup keys: URL normalisation, exact hashes, MinHash/LSH, image-set and paragraph keys."""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from flamboyance.preprocess.dedup import (
    content_hash,
    domain_of,
    image_set_key,
    jaccard_estimate,
    lsh_band_keys,
    minhash_signature,
    normalize_url,
    paragraph_key,
    shingle_hashes,
)
from flamboyance.preprocess.document import Document, ImageNode, TextNode

VOCAB = ("river bridge market bread cheese museum painting guide history children question artist evening "
         "dinner harbour fish rain book place circle line picture team weekend lunch garden lake friend "
         "morning train station city street window light colour shape story music song teacher school").split()


def random_text(seed, n_words=300):
    rng = random.Random(seed)
    return " ".join(rng.choice(VOCAB) for _ in range(n_words))


def test_normalize_url():
    assert normalize_url("HTTP://Example.COM:80/a/B?utm_source=x&b=2&a=1&fbclid=z&gclid=q#frag") == \
        "http://example.com/a/B?a=1&b=2"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x?UTM_Medium=m&q=%20a") == "https://example.com:8443/x?q=%20a"
    assert normalize_url("https://Example.com./p?b=1&a=2&a=1") == "https://example.com/p?a=1&a=2&b=1"
    assert normalize_url("https://[2001:DB8::1]:443/") == "https://[2001:db8::1]/"
    assert normalize_url("data:image/png;base64,AAAA#x") == "data:image/png;base64,AAAA"
    assert normalize_url("https://example.com/a b") == "https://example.com/a%20b"
    assert normalize_url(normalize_url("HTTP://EXAMPLE.com/x?z=1&y=2")) == normalize_url("http://example.com/x?y=2&z=1")
    with pytest.raises(ValueError, match="example.com/x"):
        normalize_url("example.com/x")
    with pytest.raises(ValueError, match="(?i)port"):
        normalize_url("http://example.com:99999/")


def test_domain_of():
    assert domain_of("https://WWW.Example.com:8080/a") == "example.com"
    assert domain_of("https://blog.example.com/a") == "blog.example.com"
    assert domain_of("not a url") == ""


def doc(*nodes, url="https://example.com/p"):
    return Document(url=url, nodes=list(nodes))


def test_content_hash_exact_duplicates():
    a = doc(TextNode(text="Hello   World"), ImageNode(url="HTTPS://example.com/a.jpg?utm_source=x"))
    b = doc(TextNode(text="hello world"), ImageNode(url="https://example.com/a.jpg", alt="other alt"),
            url="https://other.example/p")
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 32
    assert content_hash(a) != content_hash(doc(TextNode(text="hello world!"), ImageNode(url="https://example.com/a.jpg")))
    # same content, different layout
    assert content_hash(a) != content_hash(doc(ImageNode(url="https://example.com/a.jpg"), TextNode(text="hello world")))


def test_image_set_key():
    a = doc(ImageNode(url="https://example.com/1.jpg"), TextNode(text="x"), ImageNode(url="https://example.com/2.jpg"))
    b = doc(ImageNode(url="https://EXAMPLE.com/2.jpg#f"), ImageNode(url="https://example.com/1.jpg"),
            ImageNode(url="https://example.com/1.jpg"))
    assert image_set_key(a) == image_set_key(b) != ""
    assert image_set_key(a) != image_set_key(doc(ImageNode(url="https://example.com/1.jpg")))
    assert image_set_key(doc(TextNode(text="no images"))) == ""


def test_paragraph_key():
    assert paragraph_key("Subscribe to our  Newsletter! © 2023") == paragraph_key("subscribe to our newsletter! © 2024")
    assert paragraph_key("Subscribe to our newsletter!") != paragraph_key("Unsubscribe from our newsletter!")
    assert paragraph_key("   ") == ""


def test_minhash_signature_shape_and_determinism():
    sig = minhash_signature(random_text(0))
    assert sig.dtype == np.uint64 and sig.shape == (112,)
    assert np.array_equal(sig, minhash_signature(random_text(0)))
    assert not np.array_equal(sig, minhash_signature(random_text(0), seed=2))
    assert minhash_signature("a b c", num_perm=16).shape == (16,)
    assert (minhash_signature("  ...  ") == np.iinfo(np.uint64).max).all()
    # case, punctuation and whitespace do not matter; word order does
    assert np.array_equal(minhash_signature("The quick, brown fox jumps over it."),
                          minhash_signature("the quick brown  fox JUMPS over it"))
    assert not np.array_equal(minhash_signature("the quick brown fox jumps over it"),
                              minhash_signature("it over jumps fox brown quick the"))


def test_near_duplicates_share_a_band_and_unrelated_do_not():
    base = random_text(1).split()
    near = list(base)
    near[150] = "zebra"  # one word changed in 300
    sig_a, sig_b = minhash_signature(" ".join(base)), minhash_signature(" ".join(near))
    assert jaccard_estimate(sig_a, sig_b) > 0.8
    assert set(lsh_band_keys(sig_a)) & set(lsh_band_keys(sig_b))
    for seed in range(2, 12):
        other = minhash_signature(random_text(seed))
        assert not set(lsh_band_keys(sig_a)) & set(lsh_band_keys(other))
        assert jaccard_estimate(sig_a, other) < 0.1


def test_jaccard_estimate_tracks_true_jaccard():
    words = random_text(3, 400).split()
    a, b = " ".join(words[:300]), " ".join(words[100:])  # overlap of 200 words out of 400
    sa, sb = set(shingle_hashes(a).tolist()), set(shingle_hashes(b).tolist())
    true = len(sa & sb) / len(sa | sb)
    assert 0.4 < true < 0.6
    assert abs(jaccard_estimate(minhash_signature(a), minhash_signature(b)) - true) < 0.15


def test_lsh_band_keys_format_and_errors():
    keys = lsh_band_keys(minhash_signature(random_text(4)))
    assert len(keys) == 14 and len(set(keys)) == 14
    assert [k[:3] for k in keys] == [f"{i:02d}:" for i in range(14)]
    assert len(lsh_band_keys(minhash_signature("a b c d e f"), bands=4, rows=28)) == 4
    with pytest.raises(ValueError, match="too short"):
        lsh_band_keys(np.zeros(100, dtype=np.uint64))
    with pytest.raises(ValueError, match="equal"):
        jaccard_estimate(np.zeros(3, dtype=np.uint64), np.zeros(4, dtype=np.uint64))


_CHILD = """
import json, sys
from flamboyance.preprocess.dedup import *
from flamboyance.preprocess.document import Document, ImageNode, TextNode
text = sys.argv[1]
d = Document(url="https://example.com/p", nodes=[TextNode(text=text), ImageNode(url="https://example.com/a.jpg")])
sig = minhash_signature(text)
print(json.dumps({"sig": [int(x) for x in sig], "bands": lsh_band_keys(sig), "content": content_hash(d),
                  "images": image_set_key(d), "paragraph": paragraph_key(text)}))
"""


def test_hashes_do_not_depend_on_pythonhashseed():
    text = random_text(5, 50)
    outputs = []
    for seed in ("1", "977"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        proc = subprocess.run([sys.executable, "-c", _CHILD, text], env=env, capture_output=True, text=True,
                              timeout=120, check=True)
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]
    sig = minhash_signature(text)
    assert outputs[0]["sig"] == [int(x) for x in sig]
    assert outputs[0]["bands"] == lsh_band_keys(sig)
    assert outputs[0]["paragraph"] == paragraph_key(text)
