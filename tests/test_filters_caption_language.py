"""Caption language filter: another language dropped on evidence, English and name-only captions kept."""

from collections import Counter

import pytest
from flamboyance.preprocess.captions import CaptionLanguageFilter, caption_filters
from flamboyance.preprocess.language import latin_fraction, short_text_language_ok
from flamboyance.preprocess.steps import run_filters


def test_caption_reasons_with_the_default_english_filter():
    steps = caption_filters()
    cases = {
        "A dog playing in the snow near the lake": None,
        "Albert Einstein's business focus": None,  # names only: langid says "de", no German word
        "Benoit Tessier/Reuters": None,
        "Вид на Красную площадь в Москве зимой": "caption_language",
        "Диета Аткинса 10 кг 14 дней": "caption_language",  # Cyrillic: judged by script
        "東京タワーの 夜景": "caption_language",
        "Der Hund spielt mit dem Ball im Garten": "caption_language",
        "La playa de Barcelona al atardecer": "caption_language",
        "Un chat noir dans la neige": "caption_language",
        "IMG_1234.jpg": "caption_boilerplate",
        "Москва": "caption_too_few_words",
    }
    counter: Counter = Counter()
    assert {c: run_filters(steps, c, counter) for c in cases} == cases
    assert counter == Counter({"caption_language": 6, "caption_boilerplate": 1, "caption_too_few_words": 1})


def test_other_languages_can_be_kept_or_the_filter_left_out():
    assert run_filters(caption_filters(languages=("de", "en")), "Der Hund spielt mit dem Ball im Garten") is None
    assert run_filters(caption_filters(languages=("ru",)), "Вид на Красную площадь в Москве зимой") is None
    assert run_filters(caption_filters(languages=("ru",)), "A dog playing in the snow near the lake") == \
        "caption_language"
    assert [type(s).__name__ for s in caption_filters(languages=None)] == \
        ["CaptionBoilerplateFilter", "CaptionWordCountFilter"]
    with pytest.raises(ValueError):
        CaptionLanguageFilter(languages=())


def test_short_text_language_helpers():
    assert latin_fraction("Tokyo Tower (東京タワー) at night") == 17 / 22
    assert latin_fraction("12 345") == 1.0
    assert short_text_language_ok("12 345 -- 678", ("en",))  # no letters: not judged
    assert short_text_language_ok("Café crème at the corner of the street", ("en",))
