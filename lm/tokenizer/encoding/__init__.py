"""Encoding text with a trained tokenizer: the ``Tokenizer`` class (:mod:`.tokenizer`) and its
fast paths (:mod:`.fast`), a whole text file into a ``.npy`` of ids (:mod:`.dataset`), the
CS336 tokenizer experiments (:mod:`.experiments`), and ``lm encode`` /
``lm tokenizer-experiments`` (:mod:`.cli`)."""
