"""Triggers (public API, paths stable): ``ReviewTrigger``, run by the triggerer, polls the
gateway for a review's decision with the review's poll token.

May import ``defaults``, ``wire``, ``client`` and ``ledger``; never ``task`` or ``gateway``.
"""
