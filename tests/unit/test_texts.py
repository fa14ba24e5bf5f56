import pytest

from hyperhive.texts import span_text


@pytest.mark.parametrize(("seconds", "largest", "fine", "text"), [
    (-5, "d", True, "0s"),
    (0, "h", True, "0s"),
    (42.9, "h", True, "42s"),
    (60, "h", True, "1m 0s"),
    (185, "h", True, "3m 5s"),
    (3720, "h", True, "1h 2m"),
    (93600, "h", True, "26h 0m"),
    (42, "d", False, "42s"),
    (185, "d", False, "3m"),
    (3720, "d", False, "1h 2m"),
    (90000, "d", False, "1d 1h"),
])
def test_span_text(seconds, largest, fine, text):
    assert span_text(seconds, largest=largest, fine=fine) == text
