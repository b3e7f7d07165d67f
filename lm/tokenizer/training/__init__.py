"""Training a byte-level BPE tokenizer: the merge algorithm (:mod:`.bpe`), its stats and
report (:mod:`.report`), the directory it writes (:mod:`.directory`), the memory it needs
(:mod:`.memory`), and ``lm train-bpe`` (:mod:`.cli`)."""
