"""The results side: a study's questions, answers (readable, per case) and masks exported
incrementally, and bulk reordering of display sets."""
