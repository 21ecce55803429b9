"""Nanoton per TON, named once: amounts are integers in nanoton everywhere; TON is how people
read them."""

TON = 1_000_000_000
